"""One module per vision family. Each defines `generate(ctx)`, which writes the family's weight
files in their real formats and records reference embeddings through `ctx.reference`.
gen_vision.py runs every module here except `common`."""
