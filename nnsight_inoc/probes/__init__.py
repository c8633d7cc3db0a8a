"""Batched measurements of one model over many prompts, each through the traces of :mod:`nnsight_inoc.trace`.

Everything here takes a :class:`~nnsight_inoc.trace.tracing.TracedLM` and a tokenizer, never
a study, so stages, training and experiments measure with the same loops.
"""
