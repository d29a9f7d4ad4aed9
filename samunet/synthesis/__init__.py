"""Exemplar-guided synthesis: a few labelled exemplars plus unlabelled images -> labelled training cases."""
