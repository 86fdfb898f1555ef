"""MUSE: data in the hub's layout (written here, never fetched), text chunks, prompts and cuts,
the privacy formulas against hand computations, and `unlearnlm muse` end to end on a tiny model."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

from unlearnlm.config import MuseConfig, MuseEvalConfig, UnlearnConfig, load_config
from unlearnlm.errors import UserError

FORGET_TEXTS = [
    "Alice was born in Paris. The favourite colour of alice is red.",
    "Bob was born in Lima. The favourite colour of bob is green.",
    "Carol was born in Oslo. The favourite colour of carol is blue.",
]
RETAIN_TEXTS = [
    "Dave was born in Cairo. The favourite colour of dave is yellow.",
    "Erin was born in Quito. The favourite colour of erin is purple.",
]
VERBMEM = [
    {"prompt": "The favourite colour of alice is", "gt": "red. Alice was born in Paris."},
    {"prompt": "Bob was born in", "gt": "Lima. The favourite colour of bob is green."},
]
FORGET_QA = [{"question": "Where was alice born?", "answer": "paris"},
             {"question": "Where was carol born?", "answer": "oslo"}]
FORGET_ICL = [{"question": "Where was bob born?", "answer": "lima"}]
RETAIN_QA = [{"question": "Where was dave born?", "answer": "cairo"},
             {"question": "Where was erin born?", "answer": "quito"}]
RETAIN_ICL = [{"question": "Where was frank born?", "answer": "perth"}]
PRIVLEAK_FORGET = FORGET_TEXTS
PRIVLEAK_HOLDOUT = ["Grace was born in Perth. The favourite colour of grace is orange.",
                    "Heidi was born in Paris. The favourite colour of heidi is red.",
                    "Ivan was born in Lima. The favourite colour of ivan is blue."]


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_muse_folder(folder):
    """MUSE's hub layout: CONFIG/SPLIT files (JSON Lines and, as MUSE ships them, JSON arrays)."""
    _jsonl(folder / "raw" / "forget.json", [{"text": t} for t in FORGET_TEXTS])
    _jsonl(folder / "raw" / "retain1.json", [{"text": t} for t in RETAIN_TEXTS])
    (folder / "verbmem").mkdir(parents=True)
    (folder / "verbmem" / "forget.json").write_text(json.dumps(VERBMEM), encoding="utf-8")
    for name, rows in (("forget_qa", FORGET_QA), ("forget_qa_icl", FORGET_ICL),
                       ("retain_qa", RETAIN_QA), ("retain_qa_icl", RETAIN_ICL)):
        _jsonl(folder / "knowmem" / f"{name}.json", rows)
    (folder / "privleak").mkdir(parents=True)
    (folder / "privleak" / "forget.json").write_text(json.dumps([{"text": t} for t in PRIVLEAK_FORGET]))
    (folder / "privleak" / "holdout.json").write_text(json.dumps([{"text": t} for t in PRIVLEAK_HOLDOUT]))
    return folder


@pytest.fixture(scope="module")
def muse_folder(tmp_path_factory):
    return write_muse_folder(tmp_path_factory.mktemp("muse"))


@pytest.fixture(scope="module")
def bos_model(tiny_model, tmp_path_factory):
    """The tiny model whose tokenizer, like Llama's, puts a BOS before every text it encodes."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("bos") / "model"
    shutil.copytree(tiny_model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tokenizer.bos_token} $A", special_tokens=[(tokenizer.bos_token, tokenizer.bos_token_id)])
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bos_tokenizer(bos_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bos_model)


# ---- data -------------------------------------------------------------------------------


def test_muse_folder_sets_load_with_their_keys(muse_folder):
    from unlearnlm.data.text import load_rows, load_texts
    from unlearnlm.evaluation.muse import load_muse_sets

    assert load_texts("raw/forget", str(muse_folder)) == FORGET_TEXTS
    assert load_rows("verbmem/forget", str(muse_folder), ("prompt", "gt")) == VERBMEM
    sets = load_muse_sets(MuseEvalConfig(ds_size=1, metrics=["verbmem_f", "knowmem_f", "knowmem_r"]), str(muse_folder))
    assert sets.verbmem == VERBMEM[:1]
    assert sets.knowmem["knowmem_f"] == (FORGET_QA[:1], FORGET_ICL)  # ICL pairs are never cut
    assert sets.knowmem["knowmem_r"] == (RETAIN_QA[:1], RETAIN_ICL)
    sets = load_muse_sets(MuseEvalConfig(ds_size=3), str(muse_folder))
    assert sets.privleak_forget == PRIVLEAK_FORGET[:3] and sets.privleak_holdout == PRIVLEAK_HOLDOUT[:3]
    # One text a side gives an AUC of 0, 0.5 or 1: refused, before any model loads.
    with pytest.raises(UserError, match="at least 3 rows on each side; the forget set has 1, the holdout 1"):
        load_muse_sets(MuseEvalConfig(ds_size=1), str(muse_folder))


def test_missing_config_split_or_key_is_one_line(muse_folder, tmp_path):
    from unlearnlm.data.text import load_rows

    with pytest.raises(UserError, match=r"has no config 'scal'; it holds: knowmem, privleak, raw, verbmem$"):
        load_rows("scal/forget_1", str(muse_folder))
    with pytest.raises(UserError, match=r"config 'raw' of .* has no split 'retain2'; it holds: forget, retain1$"):
        load_rows("raw/retain2", str(muse_folder))
    with pytest.raises(UserError, match=r"verbmem/forget.json: row 1: missing key 'answer'"):
        load_rows("verbmem/forget", str(muse_folder), ("prompt", "answer"))
    with pytest.raises(UserError, match="neither a file nor CONFIG/SPLIT"):
        load_rows("a/b/c", str(muse_folder))
    broken = write_muse_folder(tmp_path / "broken")
    _jsonl(broken / "knowmem" / "retain_qa.json", [{"question": "Where?", "answer": 3}])
    from unlearnlm.evaluation.muse import load_muse_sets

    with pytest.raises(UserError, match=r"retain_qa.json: line 1: key 'answer' must be a string, got int"):
        load_muse_sets(MuseEvalConfig(), str(broken))
    load_muse_sets(MuseEvalConfig(metrics=["verbmem_f", "knowmem_f"]), str(broken))  # sets not asked for are not read


def test_a_txt_file_is_one_text(tmp_path):
    from unlearnlm.data.text import load_texts

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "forget.txt").write_text("Alice was born in Paris.\n\nBob was born in Lima.\n")
    assert load_texts("raw/forget", str(tmp_path)) == ["Alice was born in Paris.\n\nBob was born in Lima.\n"]
    assert load_texts(str(tmp_path / "raw" / "forget.txt"), None) == [(tmp_path / "raw" / "forget.txt").read_text()]


# ---- chunks -----------------------------------------------------------------------------


def test_chunks_are_bos_led_and_cut_every_length_minus_one_tokens(bos_tokenizer):
    from unlearnlm.data.text import chunk_token_stream

    chunks = chunk_token_stream(["Alice was born in Paris.", "Bob was born in Lima."], bos_tokenizer, 4)
    as_tokens = [bos_tokenizer.convert_ids_to_tokens(list(c)) for c in chunks]
    bos = bos_tokenizer.bos_token
    # One stream of 12 tokens (no BOS inside it), then 3 text tokens per chunk behind a BOS.
    assert as_tokens == [[bos, "alice", "was", "born"], [bos, "in", "paris", "."],
                         [bos, "bob", "was", "born"], [bos, "in", "lima", "."]]
    last_short = chunk_token_stream(["Alice was born in Paris. Bob"], bos_tokenizer, 4)
    assert [bos_tokenizer.convert_ids_to_tokens(list(c)) for c in last_short] == [
        [bos, "alice", "was", "born"], [bos, "in", "paris", "."], [bos, "bob"]]


def test_chunks_without_a_bos_token_are_plain_slices(bos_tokenizer):
    from unlearnlm.data.text import chunk_token_stream

    class NoBos:
        bos_token_id = None

        def __call__(self, text, add_special_tokens):
            assert add_special_tokens is False
            return bos_tokenizer(text, add_special_tokens=False)

    chunks = chunk_token_stream(["Alice was born in Paris."], NoBos(), 4)
    assert [bos_tokenizer.convert_ids_to_tokens(list(c)) for c in chunks] == [["alice", "was", "born", "in"],
                                                                              ["paris", "."]]
    with pytest.raises(UserError, match="chunk_length must be at least 2"):
        chunk_token_stream(["x"], NoBos(), 1)


def test_text_batches_score_every_token_but_the_first_and_no_padding(bos_model, bos_tokenizer):
    from transformers import AutoModelForCausalLM

    from unlearnlm.data.batches import TextUnlearningDataset, UnlearningCollator
    from unlearnlm.methods.losses import mean_ce

    long, short = (2, 30, 20, 19), (2, 31)
    dataset = TextUnlearningDataset([long, short], [(2, 40, 41)], ("forget", "retain"), seed=0)
    assert len(dataset) == 2 and {dataset[i]["retain"].input_ids for i in range(2)} == {(2, 40, 41)}
    pad = bos_tokenizer.pad_token_id
    for mask in (True, False):  # no prompt: the mask changes nothing
        batch = UnlearningCollator(pad, mask=mask)([dataset[0], dataset[1]])["forget"]
        assert batch["input_ids"].tolist() == [list(long), [2, 31, pad, pad]]
        assert batch["labels"].tolist() == [list(long), [2, 31, -100, -100]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    model = AutoModelForCausalLM.from_pretrained(bos_model).eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = float(mean_ce(logits, batch["labels"]))
    log_probs = torch.log_softmax(logits.double(), dim=-1).numpy()
    # By hand: positions 1..3 of the long chunk and 1 of the short one; BOS and padding never.
    scored = [-log_probs[0, t - 1, long[t]] for t in (1, 2, 3)] + [-log_probs[1, 0, short[1]]]
    assert loss == pytest.approx(sum(scored) / 4, rel=1e-5)


def test_text_mode_refuses_objectives_that_need_questions_or_refusals():
    base = ["data.format=text", "data.task_id=[]", "data.retain=raw/retain1", "data.source=x"]
    for method in ("IDK+GD", "DPO+GD", "IDK+AP", "NPO+AP", "LLMU"):
        with pytest.raises(UserError, match="plain text has not"):
            load_config(UnlearnConfig, None, base + [f"method={method}"])
    for method in ("GA", "NPO", "GA+GD", "NPO+KL", "ME+GD", "GA+KL"):
        assert load_config(UnlearnConfig, None, base + [f"method={method}"]).method == method
    with pytest.raises(UserError, match=r"set data.task_id=\[\]"):
        load_config(UnlearnConfig, None, ["data.format=text", "data.retain=r", "method=GA"])
    with pytest.raises(UserError, match="needs a retain text set"):
        load_config(UnlearnConfig, None, ["data.format=text", "data.task_id=[]", "method=GA+GD"])
    with pytest.raises(UserError, match="unknown data.format 'txt'"):
        load_config(UnlearnConfig, None, ["data.format=txt"])


def test_muse_presets_load_with_muses_settings():
    for name, corpus in (("muse-news", "news"), ("muse-books", "books")):
        config = load_config(MuseConfig, name)
        assert config.unlearn.model.name_or_path == f"muse-bench/MUSE-{corpus.title()}_target"
        assert config.unlearn.data.source == f"muse-bench/MUSE-{corpus.title()}"
        assert (config.unlearn.data.forget, config.unlearn.data.retain) == ("raw/forget", "raw/retain1")
        assert config.unlearn.data.chunk_length == 2048 and config.evaluation.corpus == corpus
        t = config.unlearn.training
        assert (t.lr, t.lr_scheduler, t.warmup_epochs, t.weight_decay, t.epochs) == (1e-5, "constant", 0.0, 0.0, 10.0)
        assert t.per_device_batch_size * t.gradient_accumulation_steps == 4
        assert config.unlearn.method == "NPO+GD" and config.unlearn.beta == 0.1
        assert load_config(MuseConfig, None).unlearn == load_config(MuseConfig, "muse-news").unlearn
        assert (config.evaluation.verbmem_max_new_tokens, config.evaluation.knowmem_max_new_tokens) == (128, 32)
    # MUSE's own evaluation has KnowMem sets for News only.
    assert load_config(MuseConfig, "muse-news").evaluation.metrics == list(MuseEvalConfig().metrics)
    assert load_config(MuseConfig, "muse-books").evaluation.metrics == ["verbmem_f", "privleak"]


# ---- prompts and cuts -------------------------------------------------------------------


def test_knowmem_prompt_token_by_token(bos_tokenizer):
    from unlearnlm.evaluation.muse import encode_with_special_tokens, knowmem_prompt

    prompt = knowmem_prompt(FORGET_ICL, "Where was alice born?")
    assert prompt == "Question: Where was bob born?\nAnswer: lima\n\nQuestion: Where was alice born?\nAnswer: "
    tokens = bos_tokenizer.convert_ids_to_tokens(encode_with_special_tokens(bos_tokenizer, prompt))
    assert tokens == [bos_tokenizer.bos_token, "question", ":", "where", "was", "bob", "born", "?", "answer", ":",
                      "lima", "question", ":", "where", "was", "alice", "born", "?", "answer", ":"]
    assert knowmem_prompt([], "Where?") == "Question: Where?\nAnswer: "


def test_knowmem_cut_at_the_first_stop_string():
    from unlearnlm.evaluation.muse import cut_at_stop_strings

    assert cut_at_stop_strings("paris\n\nQuestion: Where") == "paris"
    assert cut_at_stop_strings("paris, france\nQuestion: x\n\n") == "paris, france"
    assert cut_at_stop_strings("lima Question: who") == "lima "
    assert cut_at_stop_strings("oslo.\nIt is cold.\n\nmore") == "oslo.\nIt is cold."
    assert cut_at_stop_strings("no stop here\n") == "no stop here\n"
    assert cut_at_stop_strings("Question: at once") == ""


def test_verbmem_ground_truth_cut_counts_the_bos(bos_tokenizer, tiny_model):
    from transformers import AutoTokenizer

    from unlearnlm.evaluation.muse import encode_with_special_tokens, verbmem_reference

    gt = "red. Alice was born in Paris."
    ids = encode_with_special_tokens(bos_tokenizer, gt)
    assert bos_tokenizer.convert_ids_to_tokens(ids[:5]) == [bos_tokenizer.bos_token, "red", ".", "alice", "was"]
    assert verbmem_reference(bos_tokenizer, gt, 5) == "red. alice was"  # BOS is one of the 5
    assert verbmem_reference(bos_tokenizer, gt, 128) == "red. alice was born in paris."
    plain = AutoTokenizer.from_pretrained(tiny_model)  # no special tokens added: 5 text tokens
    assert verbmem_reference(plain, gt, 5) == "red. alice was born"


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def rouge_l_f1_by_hand(reference: str, prediction: str) -> float:
    """rouge_score's tokenisation (lowercase, runs of [a-z0-9]), no stemming; F1 of LCS precision/recall."""
    ref, pred = re.findall(r"[a-z0-9]+", reference.lower()), re.findall(r"[a-z0-9]+", prediction.lower())
    if not ref or not pred:
        return 0.0
    lcs = _lcs(ref, pred)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def test_rouge_l_f1_is_unstemmed():
    from unlearnlm.evaluation.muse import rouge_l_f1

    # A stemmer would make "running"/"runs" match "run": without it only "the" and "dog" do.
    assert rouge_l_f1("The dog runs home", "the dog running") == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert rouge_l_f1("The dog runs home", "the dog running") == pytest.approx(
        rouge_l_f1_by_hand("The dog runs home", "the dog running"))
    assert rouge_l_f1("paris", "") == 0.0
    assert rouge_l_f1("Paris, France.", "paris france") == 1.0


# ---- privacy formulas -------------------------------------------------------------------


def test_min_k_score_by_hand():
    from unlearnlm.evaluation.privacy import min_k_score

    lp = [-0.5, -3.0, -1.0, -2.0, -0.1]
    assert min_k_score(lp, 0.4) == pytest.approx((3.0 + 2.0) / 2)  # floor(0.4·5) = 2 lowest
    assert min_k_score(lp, 1.0) == pytest.approx(6.6 / 5)
    assert min_k_score([-2.0, -1.0], 0.4) == pytest.approx(2.0)  # floor(0.8) = 0 -> at least one
    assert min_k_score([-1.0, -1.0, -1.0, -4.0], 0.5) == pytest.approx((4.0 + 1.0) / 2)  # ties: any one of them
    with pytest.raises(ValueError):
        min_k_score([], 0.4)


def test_privleak_scores_the_ids_muse_encodes_no_bos_added(tiny_model):
    """MUSE's privleak.py scores `tokenizer.encode(text)` from its second id on: where a tokenizer
    defines a BOS but does not add one (the tiny model's, as SmolLM2's), the first text token is
    context, not a BOS. Min-40% by MUSE's rule, by hand from a plain forward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearnlm.evaluation.muse import text_token_log_probs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    assert tokenizer.bos_token_id is not None
    assert tokenizer.encode(PRIVLEAK_HOLDOUT[0])[0] != tokenizer.bos_token_id  # defined, not added
    got = text_token_log_probs(model, tokenizer, PRIVLEAK_FORGET + PRIVLEAK_HOLDOUT, batch_size=3)
    for text, values in zip(PRIVLEAK_FORGET + PRIVLEAK_HOLDOUT, got, strict=True):
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
        all_prob = [log_probs[i, t].item() for i, t in enumerate(ids[0, 1:].tolist())]
        assert values.tolist() == pytest.approx(all_prob, abs=1e-5)
        k_length = int(len(all_prob) * 0.4)  # texts of 3+ tokens: MUSE's k_length is never 0 here
        assert k_length >= 1
        from unlearnlm.evaluation.privacy import min_k_score

        assert min_k_score(values, 0.4) == pytest.approx(-np.mean(np.sort(all_prob)[:k_length]), abs=1e-5)


def test_mia_auc_is_the_pairwise_share_with_ties_half():
    from unlearnlm.evaluation.privacy import mia_auc

    forget, holdout = [1.0, 2.0, 2.0, 5.0], [2.0, 3.0, 0.5]
    pairs = [1.0 if h > f else 0.5 if h == f else 0.0 for h in holdout for f in forget]
    assert mia_auc(forget, holdout) == pytest.approx(sum(pairs) / len(pairs))
    assert mia_auc([1, 2], [3, 4]) == 1.0  # holdout all less likely (higher score): memorised forget rows
    assert mia_auc([3, 4], [1, 2]) == 0.0
    assert mia_auc([1, 1], [1, 1]) == 0.5


def test_privleak_by_hand():
    from unlearnlm.evaluation.privacy import privleak

    value, fallback = privleak(0.9, None)
    assert value == pytest.approx(((1 - 0.9) - 0.5) / 0.5 * 100) and fallback
    value, fallback = privleak(0.8, 1 - 0.4772)  # MUSE-News' retrained reference
    assert value == pytest.approx((0.2 - 0.4772) / 0.4772 * 100) and not fallback
    assert privleak(0.6, 0.6) == (0.0, False)
    assert privleak(0.5, 1.0)[0] is None  # A_R = 0: undefined (a division by 0), never a number
    assert privleak(1.0, 1.0)[0] is None  # the reference itself too: 0 / 0


# ---- end to end -------------------------------------------------------------------------


def _muse_overrides(bos_model, muse_folder, output_dir, *extra):
    return [f"output_dir={output_dir}", f"unlearn.model.name_or_path={bos_model}",
            f"unlearn.data.source={muse_folder}", "unlearn.method=GA+GD", "unlearn.data.chunk_length=8",
            "unlearn.training.epochs=1", "unlearn.training.per_device_batch_size=2",
            "unlearn.training.gradient_accumulation_steps=1", "unlearn.training.progress=false",
            "unlearn.training.lr=1e-3", "evaluation.verbmem_max_new_tokens=6", "evaluation.knowmem_max_new_tokens=5",
            "evaluation.generation_batch_size=2", "evaluation.loss_batch_size=2", *extra]


def _one_row_generation(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """MUSE's way: one prompt at a time, special tokens on, greedy, decoded without special tokens."""
    input_ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=True).input_ids
    output = model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(output[:, input_ids.shape[1]:], skip_special_tokens=True,
                                  clean_up_tokenization_spaces=True)[0]


def test_muse_end_to_end(bos_model, bos_tokenizer, muse_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    from unlearnlm.cli import main
    from unlearnlm.evaluation.muse import cut_at_stop_strings

    output_dir = tmp_path / "muse"
    assert main(["muse", "--config", "muse-news", *_muse_overrides(bos_model, muse_folder, output_dir)]) == 0
    summary = json.loads((output_dir / "summary.json").read_text())
    assert [m["model"] for m in summary["models"]] == ["target", "GA+GD"]
    assert (output_dir / "config.yaml").exists() and (output_dir / "GA+GD" / "model").is_dir()
    table = (output_dir / "results.md").read_text()
    assert table.splitlines()[0].startswith("| model | VerbMem_f") and "| target |" in table and "| GA+GD |" in table
    assert "MUSE's published retrained model (news: A_R = 0.4772)" in table

    # The chunks: one stream of the three texts, 7 text tokens per chunk behind a BOS.
    stream = bos_tokenizer("\n\n".join(FORGET_TEXTS), add_special_tokens=False)["input_ids"]
    train_summary = json.loads((output_dir / "GA+GD" / "train_summary.json").read_text())
    assert train_summary["forget_chunks"] == math.ceil(len(stream) / 7) and train_summary["forget_rows"] == 3

    target = json.loads((output_dir / "target" / "muse.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(bos_model).eval()
    # VerbMem and KnowMem recomputed MUSE's way, one row at a time, with ROUGE-L F1 by hand.
    verbmem = target["rows"]["verbmem_f"]
    for row, record in zip(VERBMEM, verbmem, strict=True):
        assert record["output"] == _one_row_generation(model, bos_tokenizer, row["prompt"], 6)
        assert record["gt"] == bos_tokenizer.decode(bos_tokenizer(row["gt"])["input_ids"][:6], skip_special_tokens=True,
                                                clean_up_tokenization_spaces=True)
        assert record["rougeL_f1"] == pytest.approx(rouge_l_f1_by_hand(record["gt"], record["output"]))
    assert target["metrics"]["verbmem_f"] == pytest.approx(100 * np.mean([r["rougeL_f1"] for r in verbmem]))
    for row, record in zip(FORGET_QA, target["rows"]["knowmem_f"], strict=True):
        prompt = f"Question: {FORGET_ICL[0]['question']}\nAnswer: {FORGET_ICL[0]['answer']}\n\n" \
                 f"Question: {row['question']}\nAnswer: "
        assert record["output"] == cut_at_stop_strings(_one_row_generation(model, bos_tokenizer, prompt, 5))
        assert record["rougeL_f1"] == pytest.approx(rouge_l_f1_by_hand(row["answer"], record["output"]))
    assert 0 <= target["metrics"]["knowmem_r"] <= 100

    # PrivLeak: Min-40% of each text's every token after BOS, by an independent forward; AUC by pairs.
    def min40(text):
        ids = torch.tensor([bos_tokenizer(text)["input_ids"]])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
        values = sorted(log_probs[torch.arange(ids.shape[1] - 1), ids[0, 1:]].tolist())
        return -np.mean(values[: max(1, int(0.4 * len(values)))])

    scores = target["rows"]["privleak"]
    assert scores["forget"] == pytest.approx([min40(t) for t in PRIVLEAK_FORGET], rel=1e-4)
    assert scores["holdout"] == pytest.approx([min40(t) for t in PRIVLEAK_HOLDOUT], rel=1e-4)
    pairs = [1.0 if h > f else 0.5 if h == f else 0.0 for h in scores["holdout"] for f in scores["forget"]]
    auc = sum(pairs) / len(pairs)
    assert target["metrics"]["privleak_auc"] == pytest.approx(auc)
    assert target["metrics"]["privleak"] == pytest.approx(((1 - auc) - 0.4772) / 0.4772 * 100)

    # The unlearned model moved: its numbers are its own.
    unlearned = json.loads((output_dir / "GA+GD" / "muse.json").read_text())
    assert unlearned["rows"]["privleak"]["forget"] != pytest.approx(scores["forget"])
    # A rerun of the same command finds everything done.
    assert main(["muse", "--config", "muse-news", *_muse_overrides(bos_model, muse_folder, output_dir)]) == 0


def test_muse_evaluation_only_with_a_retrained_reference(bos_model, muse_folder, tmp_path):
    from unlearnlm.scenarios.muse import run_muse

    config = load_config(MuseConfig, "muse-books", _muse_overrides(
        bos_model, muse_folder, tmp_path / "eval", "train=false", f"evaluation.retrain_model={bos_model}",
        "evaluation.metrics=[privleak]"))
    folder, table = run_muse(config)
    summary = json.loads((folder / "summary.json").read_text())
    retrain, target = summary["models"]
    assert (retrain["model"], target["model"]) == ("retrain", "target")
    # The same weights: the target's AUC is the reference's, so PrivLeak is 0 for both.
    assert target["metrics"]["privleak_auc"] == pytest.approx(retrain["metrics"]["privleak_auc"])
    assert target["metrics"]["privleak"] == pytest.approx(0.0, abs=1e-9) and retrain["metrics"]["privleak"] == 0.0
    assert target["privleak_reference"]["model"] == str(bos_model)
    stored = json.loads((folder / "retrain" / "muse.json").read_text())
    assert stored["metrics"]["privleak"] == 0.0 and stored["privleak_reference"]["model"] == str(bos_model)
    assert "VerbMem_f" not in table and "PrivLeak" in table


def test_muse_refuses_bad_settings_before_any_model_work(bos_model, muse_folder, tmp_path, capsys):
    from unlearnlm.cli import main

    output_dir = tmp_path / "bad"
    assert main(["muse", *_muse_overrides(bos_model, muse_folder, output_dir, "unlearn.method=IDK+AP")]) == 2
    assert "plain text has not" in capsys.readouterr().err
    assert main(["muse", *_muse_overrides(bos_model, muse_folder, output_dir, "unlearn.data.forget=raw/forget9")]) == 2
    assert "has no split 'forget9'" in capsys.readouterr().err
    assert main(["muse", *_muse_overrides(bos_model, muse_folder, output_dir, "evaluation.corpus=films")]) == 2
    assert "unknown evaluation.corpus 'films'" in capsys.readouterr().err
    assert not output_dir.exists()


@pytest.mark.parametrize("method", ["NPO+KL", "ME+GD"])
def test_reference_and_entropy_objectives_train_on_text(bos_model, muse_folder, tmp_path, method):
    """NPO's precomputed reference NLLs, KL's reference logits and ME's every-position loss on chunks."""
    from unlearnlm.training.run import unlearn

    config = load_config(UnlearnConfig, None, [
        f"method={method}", f"model.name_or_path={bos_model}", f"data.source={muse_folder}", "data.format=text",
        "data.forget=raw/forget", "data.retain=raw/retain1", "data.task_id=[]", "data.chunk_length=6",
        "training.epochs=1", "training.per_device_batch_size=2", "training.gradient_accumulation_steps=1",
        "training.progress=false", f"output_dir={tmp_path / 'run'}"])
    folder = unlearn(config)
    summary = json.loads((folder / "train_summary.json").read_text())
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    assert summary["method"] == method and summary["steps"] == math.ceil(summary["forget_chunks"] / 2)
    assert all(math.isfinite(row["forget_loss"]) and math.isfinite(row["regularization_loss"])
               for row in log if "forget_loss" in row)


def test_hub_names_go_to_datasets_with_config_and_split(monkeypatch):
    """By hub name: load_dataset(name, CONFIG, split=SPLIT); its errors become one line. (A stand-in
    for load_dataset: tests never reach the hub.)"""
    import datasets

    from unlearnlm.data.text import load_rows

    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        if split == "retain3":
            raise ValueError('Unknown split "retain3". Should be one of [\'forget\', \'retain1\'].\nmore lines')
        return [{"text": f"{config}/{split}"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_rows("raw/forget", "muse-bench/MUSE-News") == [{"text": "raw/forget"}]
    assert load_rows("cyber-forget-corpus", "cais/wmdp-corpora") == [{"text": "cyber-forget-corpus/train"}]
    assert calls == [("muse-bench/MUSE-News", "raw", "forget"), ("cais/wmdp-corpora", "cyber-forget-corpus", "train")]
    with pytest.raises(UserError, match=r"cannot load config 'raw' split 'retain3' of dataset 'muse-bench/MUSE-News' "
                                        r"\(Unknown split \"retain3\". Should be one of \['forget', 'retain1'\].\); "
                                        r"offline, name a local folder") as caught:
        load_rows("raw/retain3", "muse-bench/MUSE-News")
    assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match=r"row 1: missing key 'prompt'"):
        load_rows("verbmem/forget", "muse-bench/MUSE-News", ("prompt", "gt"))
