"""Analyses: one module each, registered by name (`--analyses=NAME,...`)."""
from tfrandlabels.analyses import alignment
from tfrandlabels.analyses import attribution
from tfrandlabels.analyses import volume_element
from tfrandlabels.analyses.registry import available
from tfrandlabels.analyses.registry import get

del alignment, attribution, volume_element
