"""Making a trained model cheaper to run: profiling, MHA -> GQA conversion, a paged KV cache with
continuous batching. Sits above `train` (a conversion uptrains with the shared toolkit) and below the
commands and the server that use it."""
