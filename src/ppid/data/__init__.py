"""Data: compositing and trimaps (compose), the procedural benchmark (synth), training samples and
the GPU batch augmenter (augment), folder datasets and the validator (datasets), the
Composition-1K style test-set builder (testset), preview grids (preview)."""
