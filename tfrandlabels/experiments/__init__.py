"""Experiments: one module each, registered by name (`--experiment=NAME`)."""
from tfrandlabels.experiments import frequency_shortcuts
from tfrandlabels.experiments import gaussian
from tfrandlabels.experiments import geometry_toy
from tfrandlabels.experiments import transfer
from tfrandlabels.experiments.registry import available
from tfrandlabels.experiments.registry import get

del frequency_shortcuts, gaussian, geometry_toy, transfer
