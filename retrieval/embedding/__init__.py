"""The network: creating a timm backbone with its weights (`backbone`) and running it on
batches of pixels (`embedder`). The only package that imports torch and timm."""
