"""The image every component runs in: one setting shared with `make images` (images/images.env)."""

from clasflow.images import image

BASE_IMAGE = image("clasflow-gpu")
