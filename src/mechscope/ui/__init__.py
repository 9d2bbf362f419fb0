"""The explorer: a local web app over everything mechscope computes (``mechscope serve``).

Views: the prompt lab (tokens, next-token predictions, the logit lens at every layer and position, attention
patterns of any head, direct logit attribution of heads and MLPs), the circuit explorer (a saved ``mechscope
circuit`` run as a layered graph with its faithfulness curve), image attribution (a vision organism's image or an
uploaded PNG, methods side by side with their quality metrics), the bench leaderboard, and feature pages over a
feature database (searchable by token and explanation text). Model work runs on one worker whose jobs can be
cancelled, queued or running. Every view's data is a JSON endpoint (``/api`` lists them; ``/api/openapi.json``), and the
method listings come from the families' registries, so a newly declared method appears without app code.

Example::

    import mechscope as ms
    from mechscope.ui import Explorer, create_app

    app = create_app(Explorer(ms.tiny("llama")))  # an ASGI app: serve it with uvicorn, or test it with TestClient
    with running(Explorer(ms.tiny("llama"), port=0)) as url:  # or serve it on a background thread
        print(url)

Security (see ``docs/explorer.md``): loopback by default, an access token beyond it, foreign ``Host``/``Origin``
refused, file reads confined to the directories given, a strict Content-Security-Policy, and text always written
as text.
"""

from mechscope.ui._app import create_app, running
from mechscope.ui._endpoints import ENDPOINTS
from mechscope.ui._explorer import Explorer
from mechscope.ui._files import PathRefused, Roots
from mechscope.ui._security import is_loopback, new_token

__all__ = ["ENDPOINTS", "Explorer", "PathRefused", "Roots", "create_app", "is_loopback", "new_token", "running"]
