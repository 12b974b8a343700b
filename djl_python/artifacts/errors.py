"""The one error the artifacts layer raises."""

from __future__ import annotations


class ArtifactError(Exception):
    """A model source or layout cannot be used as configured.

    The message always names what was looked at (the model id, url, folder or
    file) and what was expected instead, so it can be shown to the user as is.
    It is raised before any long step (download of weights, compilation) where
    the problem can be seen that early.
    """
