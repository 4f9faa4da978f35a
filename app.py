"""The demo as a Hugging Face Space runs it: `python app.py` (the same app as `mnist-diffusion demo`)."""

from mnist_diffusion.demo import build_demo

demo = build_demo()

if __name__ == "__main__":
    # On a Space, GRADIO_SERVER_NAME=0.0.0.0 is set for us; locally this serves http://127.0.0.1:7860.
    demo.launch()
