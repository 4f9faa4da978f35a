"""The examples of the pipelines' `__call__` docstrings (diffusers' `replace_example_docstring`) run as written."""

import doctest

import pytest

from mnist_diffusion import MnistDiffusionPipeline, MnistImg2ImgPipeline, MnistInpaintPipeline


@pytest.mark.parametrize("pipeline_class", [MnistDiffusionPipeline, MnistImg2ImgPipeline, MnistInpaintPipeline])
def test_call_docstring_example_runs(pipeline_class):
    docstring = pipeline_class.__call__.__doc__
    assert "Examples:\n        ```py" in docstring and docstring.index("Examples:") < docstring.index("Returns:")
    example = doctest.DocTestParser().get_doctest(docstring, {}, pipeline_class.__name__, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(example)
    assert runner.tries >= 5 and runner.failures == 0
