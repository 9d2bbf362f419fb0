"""The prompt lab's computations: each takes the model and a validated request, and returns plain JSON-able data.

They call the library (``lenses.logit_lens_grid``, the circuits family's declared ``dla`` node method, ``Model.run``
with pattern sites) and only shape the results for the page; they run on the model worker, one at a time.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core._model import Model

DEFAULT_MAX_TOKENS = 128
"""Longest prompt the app accepts (tokens), unless the model's context is shorter or ``--max-tokens`` says."""


class BadRequest(ValueError):
    """Input the app refuses, with a message that says what to send instead (HTTP 400)."""


def context_length(model: Model) -> int | None:
    """The model's context window in tokens, when its config says."""
    config = getattr(model.module, "config", None)
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def model_info(model: Model, max_tokens: int) -> dict[str, Any]:
    """What the page needs to know about the model: name, shape, the prompt-length limit."""
    cfg = model.cfg
    return {
        "name": model.name,
        "provenance": model.provenance,
        "n_layers": cfg.n_layers if cfg else None,
        "n_heads": cfg.n_heads if cfg else None,
        "d_model": cfg.d_model if cfg else None,
        "d_vocab": cfg.d_vocab if cfg else None,
        "context": context_length(model),
        "max_tokens": limit(model, max_tokens),
    }


def limit(model: Model, max_tokens: int) -> int:
    context = context_length(model)
    return min(max_tokens, context) if context else max_tokens


def check_prompt(model: Model, prompt: Any, max_tokens: int) -> list[int]:
    """The prompt's token ids; BadRequest when it is not a non-empty string or is longer than the limit."""
    if model.cfg is None or model.tokenizer is None:
        raise BadRequest(f"{model.name} is not a language model with a tokenizer: the prompt lab needs one")
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("prompt must be a non-empty string")
    ids = model.tokenizer(prompt)["input_ids"]
    most = limit(model, max_tokens)
    if len(ids) > most:
        why = "the model's context" if most == context_length(model) else "the server's --max-tokens"
        raise BadRequest(f"the prompt is {len(ids)} tokens; at most {most} are accepted ({why}): shorten it")
    return list(ids)


def _decode(model: Model, i: int) -> str:
    return str(model.tokenizer.decode([i]))


@torch.no_grad()
def predictions(model: Model, prompt: str, top_k: int) -> dict[str, Any]:
    """The prompt's tokens and the model's top-k next tokens with probabilities."""
    run = model.run(prompt)
    assert run.logits is not None and run.tokens is not None
    probs = run.logits[0, -1].float().softmax(-1)
    top = probs.topk(min(top_k, probs.shape[-1]))
    return {
        "prompt": prompt,
        "tokens": [{"id": int(i), "text": _decode(model, int(i))} for i in run.tokens[0]],
        "predictions": [
            {"id": int(i), "token": _decode(model, int(i)), "prob": float(p)}
            for p, i in zip(top.values, top.indices, strict=True)
        ],
        "provenance": model.provenance,
    }


def lens_grid(model: Model, prompt: str, top_k: int, tuned: Any = None) -> dict[str, Any]:
    """The logit lens at every layer and position (``lenses.logit_lens_grid``).

    With a tuned lens, its grid (``lenses.tuned_lens_grid``, same axes) is under ``tuned``, with the lens's
    provenance (model, corpus, steps, tokens) under ``tuned.lens``.
    """
    from ..lenses import logit_lens_grid, tuned_lens_grid

    grid = logit_lens_grid(model, prompt, top_k=top_k).to_dict()
    if tuned is not None:
        grid["tuned"] = {**tuned_lens_grid(model, tuned, prompt, top_k=top_k).to_dict(), "lens": tuned.provenance}
    return grid


@torch.no_grad()
def attention(model: Model, prompt: str, layer: Any) -> dict[str, Any]:
    """Every head's attention pattern at ``layer``: ``patterns[head][query][key]``."""
    site = f"head.{layer}.pattern"
    model.resolve(site)  # an unknown layer raises UnknownSiteError naming the closest sites
    run = model.run(prompt, cache=site, logits=False)
    assert run.tokens is not None
    pattern = run.cache[site][0].float()  # [head qpos kpos]
    return {
        "layer": layer,
        "site": site,
        "tokens": [_decode(model, int(i)) for i in run.tokens[0]],
        "patterns": [[[round(float(x), 5) for x in row] for row in head] for head in pattern],
    }


def dla(model: Model, prompt: str, answer: Any, wrong: Any) -> dict[str, Any]:
    """Direct logit attribution of every head and MLP to ``answer`` minus ``wrong`` (the declared ``dla`` method)."""
    from ..circuits import NODE_METHODS
    from ..data._task import Task

    ids = []
    for label, word in (("answer", answer), ("wrong", wrong)):
        if not isinstance(word, str) or not word:
            raise BadRequest(f"{label} must be a non-empty string (one token, e.g. ' Mary')")
        ids.append(model.to_single_token(word))  # ValueError naming the pieces when it is several tokens
    task = Task("prompt", [prompt], [prompt], torch.tensor([ids[0]]), torch.tensor([ids[1]]))
    result = NODE_METHODS["dla"](model, task).to_dict()
    result.pop("neurons", None)
    return {"answer": answer, "wrong": wrong, **result}


def _dictionary_site(model: Model, dictionary: Any) -> str:
    if dictionary is None:
        raise BadRequest("no dictionary is loaded: start the server with --dictionary DIR to try and steer features")
    if dictionary.cfg.site is None:
        raise BadRequest("the loaded dictionary names no site, so the app cannot tell where it reads the model")
    site = str(dictionary.cfg.site)
    model.resolve(site)  # the dictionary reads a site this model has (UnknownSiteError names the closest)
    return site


def _check_latent(dictionary: Any, latent: int) -> None:
    if not 0 <= latent < dictionary.cfg.d_sae:
        raise BadRequest(f"latent {latent} is out of range: the dictionary has {dictionary.cfg.d_sae} latents")


@torch.no_grad()
def try_feature(model: Model, dictionary: Any, text: str, latent: int) -> dict[str, Any]:
    """The latent's activation on every token of ``text`` (the dictionary's encoder on the model's own run)."""
    site = _dictionary_site(model, dictionary)
    _check_latent(dictionary, latent)
    run = model.run(text, cache=site, logits=False)
    assert run.tokens is not None
    acts = run.cache[site][0].to(dictionary.W_dec)  # [pos d_in]
    z = dictionary.encode(acts)[:, latent]  # [pos]
    return {
        "latent": latent,
        "site": site,
        "tokens": [_decode(model, int(i)) for i in run.tokens[0]],
        "activations": [float(a) for a in z],
    }


def steer(model: Model, dictionary: Any, prompt: str, latent: int, how: str, value: float, n: int) -> dict[str, Any]:
    """Greedy continuations of ``prompt`` with the latent clamped to / scaled by ``value``, and without.

    The edit keeps the dictionary's error term (``features.clamp`` / ``features.scale``).
    """
    from .. import features

    _dictionary_site(model, dictionary)
    _check_latent(dictionary, latent)
    if how not in ("clamp", "scale"):
        raise BadRequest(f"how must be 'clamp' or 'scale', got {how!r}")
    edit = (features.clamp if how == "clamp" else features.scale)(dictionary, latent, value)
    plain = model.generate(prompt, max_new_tokens=n).texts[0]
    with model.intervene(edit):
        steered = model.generate(prompt, max_new_tokens=n).texts[0]
    return {
        "latent": latent,
        "how": how,
        "value": value,
        "intervention": repr(edit),
        "plain": plain,
        "steered": steered,
    }


def token_attribution(model: Model, prompt: str, continuation: str | None, n: int, method: str) -> dict[str, Any]:
    """Which context tokens drive each new token (``attribution.token_attribution``: IG or input x gradient)."""
    from ..attribution import token_attribution as attribute

    if method not in ("integrated_gradients", "input_x_gradient"):
        raise BadRequest(f"method must be 'integrated_gradients' or 'input_x_gradient', got {method!r}")
    result = attribute(model, prompt, continuation=continuation, max_new_tokens=n, method=method)  # type: ignore[arg-type]
    return result.to_dict()
