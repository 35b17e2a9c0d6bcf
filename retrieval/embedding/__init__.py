"""The network: creating a timm backbone with its weights (`backbone`) and running it on
batches of pixels (`embedder`); `threads` keeps a calling program's torch thread count.
The only package that imports torch and timm."""
