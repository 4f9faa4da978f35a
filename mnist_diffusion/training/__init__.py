"""The training machinery that the scripts in training/ stand on (as diffusers' examples stand on training_utils)."""
