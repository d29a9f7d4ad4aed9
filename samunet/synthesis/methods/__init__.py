"""Synthesis methods: each module turns one unlabelled target image and the exemplars into one synthetic
labelled case (`synthesize(target, exemplars, rng, options) -> SyntheticCase`)."""
from samunet.synthesis.methods import copy_paste, registration

METHODS = {"registration": registration, "copy_paste": copy_paste}
DEFAULT_METHOD = "registration"
