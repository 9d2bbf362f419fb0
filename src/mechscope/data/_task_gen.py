"""Builders for the standard circuit tasks, generated for a given tokenizer.

Each builder filters its word pools down to words that are one token (with their leading space) for this
tokenizer, then samples distinct clean/corrupt pairs whose two prompts tokenise to the same length. A
candidate pair that does not align is resampled; if the pools cannot supply ``n`` distinct pairs, a ValueError
says how many they can and which words were dropped.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from mechscope.data import _pools as P
from mechscope.data._task import Task, stack_ids
from mechscope.data._tokens import answer_token, continuation_ids, same_length, single_token_words


class _Pair(NamedTuple):
    clean: str
    corrupt: str
    answer: int | list[int]
    wrong: int | list[int]
    meta: dict[str, Any]


_MakePair = Callable[[random.Random, int], "_Pair | None"]


def _sample(name: str, make: _MakePair, n: int, seed: int, meta: dict[str, Any]) -> Task:
    """Draw ``n`` distinct pairs from ``make(rng, index)`` (None = rejected) and pack them into a Task."""
    if n < 1:
        raise ValueError(f"{name}: n must be at least 1, got {n}")
    rng = random.Random(seed)
    pairs: dict[tuple[str, str], _Pair] = {}
    for _ in range(50 * n + 500):
        if len(pairs) == n:
            break
        pair = make(rng, len(pairs))
        if pair is not None:
            pairs.setdefault((pair.clean, pair.corrupt), pair)
    if len(pairs) < n:
        raise ValueError(
            f"{name}: could only generate {len(pairs)} distinct aligned pairs (asked for {n}); "
            f"words dropped as multi-token for this tokenizer: {meta.get('dropped', [])}"
        )
    got = list(pairs.values())
    return Task(
        name=name,
        clean=[p.clean for p in got],
        corrupt=[p.corrupt for p in got],
        answers=stack_ids([p.answer for p in got]),
        wrongs=stack_ids([p.wrong for p in got]),
        metadata={**meta, "seed": seed, "pairs": [p.meta for p in got]},
    )


def _pool(tokenizer: Any, words: tuple[str, ...] | list[str], dropped: list[str], need: int, what: str) -> list[str]:
    kept, gone = single_token_words(tokenizer, words)
    dropped.extend(gone)
    if len(kept) < need:
        raise ValueError(f"only {len(kept)} {what} are single tokens for this tokenizer (need {need}); dropped {gone}")
    return kept


_SLOT = re.compile(r"\[(A|B)\]")


def ioi(tokenizer: Any, n: int = 32, seed: int = 0, template: str = "mixed", corrupt: str = "ABC") -> Task:
    """Indirect object identification (Wang et al. 2022, arXiv:2211.00593, section 2).

    Clean: "When Mary and John went to the store, John gave a drink to" -> " Mary" (the indirect object, named
    once) against " John" (the subject, named twice). ``template`` picks the name order of the first clause:
    ``"ABBA"`` (IO first), ``"BABA"`` (subject first) or ``"mixed"`` (alternating). Corrupt ``"ABC"``: the
    three name slots hold three other distinct names, so the sentence no longer says who the indirect object
    is.
    """
    if template not in ("mixed", "ABBA", "BABA"):
        raise ValueError(f"ioi: template must be 'mixed', 'ABBA' or 'BABA', got {template!r}")
    if corrupt != "ABC":
        raise ValueError(f"ioi: the only corruption is 'ABC', got {corrupt!r}")
    dropped: list[str] = []
    names = _pool(tokenizer, P.IOI_NAMES, dropped, 5, "IOI names")

    def make(rng: random.Random, i: int) -> _Pair | None:
        order = template if template != "mixed" else ("ABBA", "BABA")[i % 2]
        t = rng.randrange(len(P.IOI_TEMPLATES_BABA))
        text = P.IOI_TEMPLATES_BABA[t]
        if order == "ABBA":
            text = text.replace("[B] and [A]", "[A] and [B]", 1)
        text = text.replace("[PLACE]", rng.choice(P.IOI_PLACES)).replace("[OBJECT]", rng.choice(P.IOI_OBJECTS))
        io, s = rng.sample(names, 2)
        others = rng.sample([x for x in names if x not in (io, s)], 3)
        slots = _SLOT.findall(text)  # e.g. ["A", "B", "B"] for ABBA
        clean_names = [io if slot == "A" else s for slot in slots]
        clean, corr = _fill(text, clean_names), _fill(text, others)
        if not same_length(tokenizer, clean, corr):
            return None
        meta = {"template": t, "order": order, "io": io, "s": s, "corrupt_names": others}
        return _Pair(
            clean,
            corr,
            answer_token(tokenizer, clean, " " + io),
            answer_token(tokenizer, clean, " " + s),
            meta,
        )

    return _sample("ioi", make, n, seed, {"template": template, "corrupt": corrupt, "dropped": dropped})


def _fill(text: str, names: list[str]) -> str:
    it = iter(names)
    return _SLOT.sub(lambda _: next(it), text)


def _year_bins(tokenizer: Any, prompt: str) -> tuple[int, list[int]] | None:
    """How years continue after the century prefix: (digits per token, id of each bin), or None.

    GPT-2 style vocabularies continue "... the year 17" with one two-digit token ("00".."99"); digit-level
    vocabularies (SmolLM2, Llama) with one digit, so each bin is a decade. A bin's token is the one that
    continues the prompt in context, or else the token whose text is the bin ("00"): GPT-2 reads " 1700" as
    one input token, yet "00" is still the output token that spells that year after " 17" (Hanna et al. 2023).
    """
    for digits in (2, 1):
        bins = [_bin_token(tokenizer, prompt, f"{v:0{digits}d}") for v in range(10**digits)]
        found = [b for b in bins if b is not None]
        if len(found) == 10**digits and len(set(found)) == len(found):
            return digits, found
    return None


def _bin_token(tokenizer: Any, prompt: str, text: str) -> int | None:
    cont = continuation_ids(tokenizer, prompt, text)
    if cont is not None and len(cont) == 1:
        return cont[0]
    alone = tokenizer.encode(text, add_special_tokens=False)
    return alone[0] if len(alone) == 1 else None


def greater_than(tokenizer: Any, n: int = 32, seed: int = 0) -> Task:
    """Greater-than (Hanna et al. 2023, arXiv:2305.00586, section 2).

    Clean: "The war lasted from the year 1732 to the year 17"; corrupt: the start year becomes "1701". Answers
    are the year tokens that make the end year later than the start year, wrongs those that do not (``[batch,
    k]`` sets, padded with -1), so ``prob_diff`` is the paper's probability difference. On digit-level
    tokenizers each token is a decade, so start years end in 9 (1739, ...) and every decade is wholly above or
    below.
    """
    per_century: dict[int, tuple[int, list[int]]] = {}
    for cc in P.GT_CENTURIES:
        found = _year_bins(tokenizer, P.GT_TEMPLATE.format(noun="war", start=f"{cc}02", century=cc))
        if found is not None:
            per_century[cc] = found
    if not per_century:
        shown = tokenizer.convert_ids_to_tokens(tokenizer.encode(" 1732", add_special_tokens=False))
        raise ValueError(
            "greater_than: this tokenizer cannot continue '... the year 17' with one token per year or "
            f"decade (' 1732' -> {shown}), so year probabilities cannot be scored"
        )
    centuries = sorted(per_century)

    def make(rng: random.Random, i: int) -> _Pair | None:
        cc = rng.choice(centuries)
        digits, bins = per_century[cc]
        width = 10 ** (2 - digits)  # years per bin: 1 or 10
        yy = rng.choice([y for y in range(2, 99) if (y + 1) % width == 0])
        noun = rng.choice(P.GT_NOUNS)
        clean = P.GT_TEMPLATE.format(noun=noun, start=f"{cc}{yy:02d}", century=cc)
        corr = P.GT_TEMPLATE.format(noun=noun, start=f"{cc}01", century=cc)
        if not same_length(tokenizer, clean, corr):
            return None
        above = [b for v, b in enumerate(bins) if v * width > yy]
        below = [b for v, b in enumerate(bins) if (v + 1) * width - 1 <= yy]
        meta = {"noun": noun, "century": cc, "start_year": cc * 100 + yy, "digits_per_token": digits}
        return _Pair(clean, corr, above, below, meta)

    return _sample("greater_than", make, n, seed, {"dropped": []})


def induction(tokenizer: Any, n: int = 32, seq_len: int = 20, seed: int = 0) -> Task:
    """Induction (Olsson et al. 2022, "In-context learning and induction heads"): token ids, not text.

    Clean: ``[bos] r_1..r_L r_1..r_{L-1}`` with distinct random tokens ``r``; the answer is ``r_L``, which
    only copying from the first half predicts. Corrupt: the first half is other random tokens, so there is
    nothing to copy. The wrong token is a random token absent from both. BOS is prepended when the tokenizer
    has one.
    """
    if seq_len < 2:
        raise ValueError(f"induction: seq_len must be at least 2, got {seq_len}")
    special = set(tokenizer.all_special_ids)
    vocab = torch.tensor([t for t in range(len(tokenizer)) if t not in special], dtype=torch.long)
    if len(vocab) < 2 * seq_len + 1:
        raise ValueError(f"induction: vocabulary of {len(vocab)} tokens is too small for seq_len={seq_len}")
    gen = torch.Generator().manual_seed(seed)
    draws = torch.stack([vocab[torch.randperm(len(vocab), generator=gen)[: 2 * seq_len + 1]] for _ in range(n)])
    r, r_other, wrong = (
        draws[:, :seq_len],
        draws[:, seq_len : 2 * seq_len],
        draws[:, -1],
    )  # [batch seq_len] x2
    bos = tokenizer.bos_token_id
    head = torch.full((n, 1 if bos is not None else 0), bos if bos is not None else 0, dtype=torch.long)
    clean = torch.cat([head, r, r[:, :-1]], dim=1)  # [batch 2*seq_len (+1)]
    corrupt = torch.cat([head, r_other, r[:, :-1]], dim=1)
    meta = {"seq_len": seq_len, "prepend_bos": bos is not None, "seed": seed}
    return Task("induction", clean, corrupt, r[:, -1].clone(), wrong.clone(), meta)


def factual_recall(tokenizer: Any, n: int = 32, seed: int = 0) -> Task:
    """Factual recall, country -> capital (in the spirit of Meng et al. 2022, arXiv:2202.05262).

    Clean: "The capital of France is" -> " Paris"; corrupt: another country whose prompt has the same token
    length, and the wrong answer is that country's capital. Capitals that are not one token are dropped.
    """
    dropped: list[str] = []
    capitals = set(_pool(tokenizer, [c for _, c in P.COUNTRY_CAPITALS], dropped, 2, "capitals"))
    pool = [(country, cap) for country, cap in P.COUNTRY_CAPITALS if cap in capitals]
    lengths: dict[tuple[int, str], int] = {}

    def length(t: int, country: str) -> int:
        if (t, country) not in lengths:
            text = P.FR_TEMPLATES[t].format(country=country)
            lengths[t, country] = len(tokenizer.encode(text, add_special_tokens=False))
        return lengths[t, country]

    def make(rng: random.Random, i: int) -> _Pair | None:
        t = rng.randrange(len(P.FR_TEMPLATES))
        country, cap = rng.choice(pool)
        options = [(c, k) for c, k in pool if k != cap and length(t, c) == length(t, country)]
        if not options:
            return None
        other, other_cap = rng.choice(options)
        clean, corr = (P.FR_TEMPLATES[t].format(country=c) for c in (country, other))
        meta = {"template": t, "country": country, "capital": cap, "corrupt_country": other}
        return _Pair(
            clean,
            corr,
            answer_token(tokenizer, clean, " " + cap),
            answer_token(tokenizer, clean, " " + other_cap),
            meta,
        )

    return _sample("factual_recall", make, n, seed, {"dropped": dropped})


def gendered_pronoun(tokenizer: Any, n: int = 32, seed: int = 0) -> Task:
    """Gendered pronoun prediction (Mathwin et al. 2023).

    After "Identifying a preliminary circuit for predicting gendered pronouns in GPT-2 small". Clean: "So Mary
    is a really great friend, isn't" -> " she" against " he"; corrupt: a name of the other gender in the same
    sentence. Half the clean names are female, half male.
    """
    dropped: list[str] = []
    by_gender = {
        "male": _pool(tokenizer, P.MALE_NAMES, dropped, 2, "male names"),
        "female": _pool(tokenizer, P.FEMALE_NAMES, dropped, 2, "female names"),
    }

    def make(rng: random.Random, i: int) -> _Pair | None:
        gender, other = ("female", "male") if i % 2 == 0 else ("male", "female")
        t = rng.randrange(len(P.GP_TEMPLATES))
        name, other_name = rng.choice(by_gender[gender]), rng.choice(by_gender[other])
        clean, corr = (P.GP_TEMPLATES[t].format(name=x) for x in (name, other_name))
        if not same_length(tokenizer, clean, corr):
            return None
        answer = answer_token(tokenizer, clean, " " + P.PRONOUNS[gender])
        wrong = answer_token(tokenizer, clean, " " + P.PRONOUNS[other])
        return _Pair(
            clean,
            corr,
            answer,
            wrong,
            {"template": t, "name": name, "gender": gender, "corrupt_name": other_name},
        )

    return _sample("gendered_pronoun", make, n, seed, {"dropped": dropped})


def subject_verb_agreement(tokenizer: Any, n: int = 32, seed: int = 0) -> Task:
    """Subject-verb agreement across an attractor (Linzen et al. 2016; Finlayson et al. 2021).

    Finlayson et al. is arXiv:2106.06087. Clean: "The key near the cabinets" -> " is" against " are"; corrupt:
    the subject's number flipped ("The keys near the cabinets"). Half the clean subjects are singular; the
    attractor's number is random. Verb pairs: is/are, was/were, has/have.
    """
    dropped: list[str] = []
    forms = [w for pair in P.SVA_NOUNS for w in pair]
    kept = set(_pool(tokenizer, forms, dropped, 4, "noun forms"))
    nouns = [pair for pair in P.SVA_NOUNS if set(pair) <= kept]
    if len(nouns) < 2:
        raise ValueError(f"subject_verb_agreement: too few nouns with single-token forms; dropped {dropped}")

    def make(rng: random.Random, i: int) -> _Pair | None:
        plural = i % 2 == 1
        noun, attractor = rng.sample(nouns, 2)
        attractor_word = attractor[rng.randrange(2)]
        verbs = rng.choice(P.SVA_VERBS)
        t = rng.randrange(len(P.SVA_TEMPLATES))
        clean, corr = (
            P.SVA_TEMPLATES[t].format(noun=noun[int(p)], attractor=attractor_word) for p in (plural, not plural)
        )
        if not same_length(tokenizer, clean, corr):
            return None
        answer = answer_token(tokenizer, clean, " " + verbs[int(plural)])
        wrong = answer_token(tokenizer, clean, " " + verbs[int(not plural)])
        meta = {"template": t, "subject": noun[int(plural)], "plural": plural, "attractor": attractor_word}
        return _Pair(clean, corr, answer, wrong, meta)

    return _sample("subject_verb_agreement", make, n, seed, {"dropped": dropped})
