"""Analyses: one module each, registered by name (`--analyses=NAME,...`)."""
from tfrandlabels.analyses import alignment
from tfrandlabels.analyses import attribution
from tfrandlabels.analyses import class_spectra
from tfrandlabels.analyses import dominant_frequencies
from tfrandlabels.analyses import shortcut_test
from tfrandlabels.analyses import volume_element
from tfrandlabels.analyses.registry import available
from tfrandlabels.analyses.registry import get

del (alignment, attribution, class_spectra, dominant_frequencies, shortcut_test,
     volume_element)
