"""The warnings rv2dist gives about its results (exported as ``rv2dist.<Name>``)."""


class UndefinedLayerWarning(RuntimeWarning):
    """A layer has zero variance (or, uncentred, is all zeros): its metrics are NaN."""


class UndefinedReplicateWarning(RuntimeWarning):
    """Bootstrap replicates whose weights leave a metric undefined were left out of the
    intervals (the ``undefined_replicates`` attr of the interval variables)."""


class FewReplicatesWarning(UserWarning):
    """Too few bootstrap replicates for the interval's confidence: its ends rest on the
    most extreme replicates."""


class ShiftedIntervalWarning(RuntimeWarning):
    """A measure's estimate lies outside its own bootstrap interval in some cells: a
    resample's duplicated observations shift the measure (the second-moment measures
    move with the number of observations against the units), so those intervals are
    no confidence intervals (the ``estimate_outside`` attr of the interval variables
    counts the cells)."""


class DegenerateCellWarning(RuntimeWarning):
    """Two layers' ranks together exceed the observations less one: canonical
    correlations of the pair are 1 whatever the data, so CCA-type measures and
    regression say nothing of it (the result's ``forced_ones`` variable counts them)."""


class UnreadOptionWarning(UserWarning):
    """An option was set that none of the measures asked for reads (``ridge_lambda``
    with CKA, say): it changes nothing."""
