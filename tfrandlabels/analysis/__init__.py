"""Analysis: pure math on tensors (alignment of filters with data, ...), no I/O."""
