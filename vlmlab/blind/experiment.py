"""Notebook 05's measurements: encoder readout vs VLM answers, blind test, TV distance, layer probing.

The readouts of ``vlmlab.blind.readouts`` run on *feature maps*, so one function (``readout``) answers a
task from any (n, k, C, H, W) stack of maps: the vision trunk's patch tokens (exactly the tokens the
VLM's language model receives, before the projector) or the LM's hidden states at those image
positions, layer by layer (Fu et al. §7). The VLM answers by option-letter likelihood
(``vlmlab.blind.vlm.option_logprobs``); its answer distribution is compared with the label
distribution by total variation, TV(P, Q) = 1/2 sum_i |P_i - Q_i| (§10).
"""
from __future__ import annotations

import dataclasses
import hashlib
import pickle

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from vlmlab.blind.readouts import (correspondence_readout, depth_readout, fit_depth_probe, gram_matrices,
                                   odd_one_out_readout, style_readout, tokens_to_grid)
from vlmlab.blind.tasks import (CONTROLS, LETTERS, MCTask, control_task, correspondence_task, depth_task,
                                odd_one_out_task, style_task)
from vlmlab.blind.vlm import IMAGE, TinyVLM, option_logprobs, pad_batch
from vlmlab.features import extract_arrays
from vlmlab.metrics import answer_distribution, total_variation
from vlmlab.runcache import closure_fingerprint, tensor_digest
from vlmlab.runtime import process_map, progress

TASKS = {"depth": depth_task, "correspondence": correspondence_task, "odd_one_out": odd_one_out_task,
         "style": style_task}


def make_task(name: str, n: int, seed: int, size: int = 64) -> MCTask:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; choose from {list(TASKS)}")
    return TASKS[name](n, seed=seed, size=size)


def blank(task: MCTask) -> MCTask:
    """The same questions with every image replaced by a white one (the paper's blind test)."""
    white = np.full_like(task.images, 255)
    return dataclasses.replace(task, images=white, clean=None if task.clean is None else white.copy())


@torch.no_grad()
def trunk_patches(vlm: TinyVLM, images: np.ndarray, batch_size: int = 512) -> Tensor:
    """(n, k, S, S, 3) uint8 -> (n, k, P, C) patch tokens of the VLM's frozen vision trunk."""
    flat = images.reshape(-1, *images.shape[2:])
    out = torch.cat([vlm.vision(flat[i:i + batch_size]) for i in range(0, len(flat), batch_size)])
    return out.view(*images.shape[:2], *out.shape[1:])


def readout(task: MCTask, maps: Tensor, train: MCTask | None = None, train_maps: Tensor | None = None) -> np.ndarray:
    """Answer every question of ``task`` from feature maps (n, k, C, H, W) alone; (n,) option indices.

    depth: a logistic probe on left/right patch features, fitted on ``train``; correspondence: cosine
    similarity of the features interpolated at the points; odd-one-out: the image whose mean feature is
    least similar to the others'; style: the candidate whose Gram matrix is closest to the reference's.
    """
    kind, size = task.readout_kind, task.images.shape[2]
    if kind == "depth":
        if train is None or train_maps is None:
            raise ValueError("the depth readout is a probe: pass the training questions and their maps")
        probe = fit_depth_probe(train_maps[:, 0], train.answers, boxes=_boxes(train), image_size=size)
        return depth_readout(probe, maps[:, 0], _boxes(task), size).numpy()
    if kind == "correspondence":
        if task.points is None:
            raise ValueError(f"{task.name}: the correspondence readout needs the keypoints (task.points); "
                             "see vlmlab.blind.benchmarks for where BLINK's come from")
        return correspondence_readout(maps[:, 0], maps[:, 1], torch.as_tensor(task.points), size).numpy()
    if kind == "odd_one_out":
        return odd_one_out_readout(F.normalize(maps.mean((-2, -1)), dim=-1)).numpy()
    if kind == "style":                    # in chunks: a 7B LM's hidden states give 4096 x 4096 Gram matrices
        n, k, c = maps.shape[:3]
        step = max(1, 2 ** 26 // (k * c * c))
        return torch.cat([style_readout(gram_matrices(m.flatten(3).transpose(2, 3).flatten(0, 1).float())
                                        .view(len(m), k, c, c)) for m in maps.split(step)]).numpy()
    raise KeyError(f"{task.name}: no readout of kind {kind!r}")


def _boxes(task: MCTask) -> Tensor | None:
    return None if task.boxes is None else torch.as_tensor(task.boxes)


@torch.no_grad()
def vlm_logprobs(vlm: TinyVLM, task: MCTask, patches: Tensor, n_soft: int = 0, batch_size: int = 64) -> Tensor:
    """(n, K) log-probabilities of the option letters for every question (letter likelihood scoring)."""
    vlm.eval()
    options = list(LETTERS[:task.n_options])
    segs = [task.segments(q) for q in range(len(patches))]         # per-question texts where they differ
    return torch.cat([option_logprobs(vlm, segs[i:i + batch_size], list(patches[i:i + batch_size]),
                                      options, n_soft) for i in range(0, len(patches), batch_size)])


def tv_to_labels(predictions: np.ndarray, answers: np.ndarray, n_options: int) -> float:
    """TV distance between the predicted-letter and the true-letter distributions (0 = same letter frequencies)."""
    return float(total_variation(answer_distribution(predictions, n_options), answer_distribution(answers, n_options)))


@torch.no_grad()
def hidden_maps(vlm: TinyVLM, task: MCTask, patches: Tensor, batch_size: int = 64) -> list[Tensor]:
    """The LM's hidden states at the image-token positions, per layer: [(n, k, d, H, W)] * (layers + 1).

    Entry 0 is the LM's input (the projector's output); entry l the output of block l.
    """
    vlm.eval()
    n, k, p = patches.shape[:3]
    seg = task.segments()
    per_layer: list[list[Tensor]] = []
    for i in range(0, n, batch_size):
        chunk = patches[i:i + batch_size]
        ids, mask, _ = pad_batch([vlm.encode_prompt(seg, p)] * len(chunk))
        hs = vlm(ids, chunk.flatten(0, 1), mask, output_hidden_states=True).hidden_states
        pos = ids[0] == IMAGE
        for layer, h in enumerate(hs):
            if len(per_layer) <= layer:
                per_layer.append([])
            per_layer[layer].append(tokens_to_grid(h[:, pos].reshape(len(chunk), k, p, -1)).float())
    return [torch.cat(x) for x in per_layer]


# ---------------------------------------------------------------------------------------------- notebook drivers
@dataclasses.dataclass
class TaskRun:
    """One task's training and test questions with the frozen trunk's patch tokens (n, k, P, C): of the
    images the VLM sees, of the white images, and of the images the readouts see (``*_readout``: the
    unmarked views for correspondence, the same tensors otherwise)."""

    train: MCTask
    test: MCTask
    train_patches: Tensor
    test_patches: Tensor
    blank_patches: Tensor
    train_readout: Tensor
    test_readout: Tensor


def prepare_tasks(vlm: TinyVLM, names, n_train: int, n_test: int, seed: int, size: int = 64) -> dict[str, TaskRun]:
    """Build every task's splits (disjoint seeds) and encode their images once."""
    runs = {}
    for i, name in enumerate(progress(names, desc="tasks")):
        train = make_task(name, n_train, seed=1000 * seed + 10 * i, size=size)
        test = make_task(name, n_test, seed=1000 * seed + 10 * i + 1, size=size)
        train_p, test_p = trunk_patches(vlm, train.images), trunk_patches(vlm, test.images)
        runs[name] = TaskRun(train, test, train_p, test_p, trunk_patches(vlm, blank(test).images),
                             train_p if train.clean is None else trunk_patches(vlm, train.clean),
                             test_p if test.clean is None else trunk_patches(vlm, test.clean))
    return runs


def _acc(pred, answers) -> float:
    return 100.0 * float(np.mean(np.asarray(pred) == np.asarray(answers)))


def encoder_embeddings(vlm: TinyVLM, images: np.ndarray) -> Tensor:
    """(n, k, S, S, 3) -> (n, k, D) unit image embeddings of the CLIP the VLM's trunk belongs to."""
    flat = images.reshape(-1, *images.shape[2:])
    feats = extract_arrays(vlm.vision._bundle[0], flat, np.zeros(len(flat), int), "blind", cache=False).feats
    return feats.view(*images.shape[:2], -1)


def variant_label(variant: str, n_tokens_or_rank: int) -> str:
    """Display name of a fine-tuning variant: ``prompt-<n>`` for prompt tuning, else the variant."""
    return f"prompt-{n_tokens_or_rank}" if variant == "prompt" else variant


def predictions(vlm: TinyVLM, task: MCTask, patches: Tensor, n_soft: int = 0) -> np.ndarray:
    """(n,) the option each question's letter scores pick."""
    return vlm_logprobs(vlm, task, patches, n_soft).argmax(-1).numpy()


def readout_vs_vlm(vlm: TinyVLM, runs: dict[str, TaskRun], model: str) -> tuple[pd.DataFrame, dict]:
    """Table ``task, model, readout_acc, vlm_acc, chance`` and the VLM's test predictions per task.

    The readout uses the trunk's patch tokens (``readout``), except odd-one-out, which the paper reads
    from the encoder's [CLS]: here the CLIP's image embedding (its attention pool's output).
    """
    readout_preds, preds = {}, {}
    for name, r in runs.items():
        if name == "odd_one_out":                # the paper reads the 3-D task from the encoder's [CLS] embedding
            readout_preds[name] = odd_one_out_readout(encoder_embeddings(vlm, r.test.images))
        else:
            readout_preds[name] = readout(r.test, tokens_to_grid(r.test_readout), r.train,
                                          tokens_to_grid(r.train_readout))
        preds[name] = predictions(vlm, r.test, r.test_patches)
    return accuracy_table({n: r.test for n, r in runs.items()}, model, readout_preds, preds), preds


def accuracy_table(tests: dict[str, MCTask], model: str, readout_preds: dict, vlm_preds: dict) -> pd.DataFrame:
    """``task, model, readout_acc, vlm_acc, chance`` (%) from each task's readout and VLM predictions."""
    return pd.DataFrame([{"task": name, "model": model, "readout_acc": _acc(readout_preds[name], t.answers),
                          "vlm_acc": _acc(vlm_preds[name], t.answers), "chance": 100.0 * t.chance}
                         for name, t in tests.items()])


def control_table(vlm: TinyVLM, names, n: int, seed: int, size: int = 64) -> pd.DataFrame:
    """The control rows (``vlmlab.blind.tasks.control_task``), scored exactly as ``readout_vs_vlm`` scores the
    VLM (``predictions``): ``task, format_of, n_options, accuracy, chance`` (%). Each control's questions come
    from their own seed, apart from ``prepare_tasks``' and from the VLM's training pool."""
    rows = []
    for i, name in enumerate(progress(names, desc="control questions")):
        task = control_task(name, n, seed=1000 * seed + 10 * i + 5, size=size)
        pred = predictions(vlm, task, trunk_patches(vlm, task.images))
        rows.append({"task": name, "format_of": CONTROLS[name][0], "n_options": task.n_options,
                     "accuracy": _acc(pred, task.answers), "chance": 100.0 * task.chance})
    return pd.DataFrame(rows)


def controls_beside(readout_table: pd.DataFrame, controls: pd.DataFrame) -> pd.DataFrame:
    """``readout_vs_vlm`` with the control row of the same answer format beside each task:
    ``task, readout_acc, vlm_acc, chance, control, control_acc`` (no control: empty / NaN)."""
    c = controls.rename(columns={"task": "control", "accuracy": "control_acc", "format_of": "task"})
    return readout_table[["task", "readout_acc", "vlm_acc", "chance"]].merge(
        c[["task", "control", "control_acc"]], on="task", how="left")


def control_summary(controls: pd.DataFrame, margin: float) -> str:
    """One factual sentence on the control rows: how many are more than ``margin`` points above chance."""
    excess = controls.accuracy - controls.chance
    above = int((excess > margin).sum())
    rows = ", ".join(f"{t} {a:.1f} % (chance {c:.0f} %)" for t, a, c in
                     zip(controls.task, controls.accuracy, controls.chance))
    verdict = ("so it is competent on the answer formats and the gaps above measure blindness on the "
               "vision-centric judgement" if above == len(controls) else
               "so part of each gap above is a failure to answer this format at all, not only blindness on "
               "the vision-centric judgement")
    return (f"On questions of the same formats about attributes it was trained on, the VLM answers {rows}: "
            f"{above} of {len(controls)} more than {margin:g} points above chance, {verdict}.")


def blind_test(vlm: TinyVLM, runs: dict[str, TaskRun], model: str,
               image_preds: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same questions with white images (``blind_tables`` of the predictions with and without)."""
    blank_preds = {name: predictions(vlm, r.test, r.blank_patches) for name, r in runs.items()}
    return blind_tables({n: r.test for n, r in runs.items()}, model, image_preds, blank_preds)


def blind_tables(tests: dict[str, MCTask], model: str, image_preds: dict,
                 blank_preds: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Answer frequencies per option with the real images, with white ones and of the labels
    (``task, model, condition, option, frequency``, condition ``image``/``blank``/``labels``), and per
    task the share of questions answered identically with and without the image
    (``task, same_answer_blank, blank_acc``)."""
    freq_rows, agree_rows = [], []
    for name, t in tests.items():
        k, blank_pred = t.n_options, blank_preds[name]
        for cond, pred in (("image", image_preds[name]), ("blank", blank_pred), ("labels", t.answers)):
            for o, f in enumerate(answer_distribution(pred, k).tolist()):
                freq_rows.append({"task": name, "model": model, "condition": cond, "option": LETTERS[o], "frequency": f})
        agree_rows.append({"task": name, "same_answer_blank": 100.0 * float(np.mean(blank_pred == image_preds[name])),
                           "blank_acc": _acc(blank_pred, t.answers)})
    return pd.DataFrame(freq_rows), pd.DataFrame(agree_rows)


def layer_probe(vlm: TinyVLM, runs: dict[str, TaskRun], model: str) -> pd.DataFrame:
    """The task readouts on the trunk's tokens (layer -1) and on the LM's hidden states at the image
    positions (0 = the projector's output, l = after block l): ``task, model, layer, accuracy``."""
    rows = []
    for name, r in runs.items():
        test_p, train_p = r.test_readout, r.train_readout     # correspondence: the unmarked images
        pred = readout(r.test, tokens_to_grid(test_p), r.train, tokens_to_grid(train_p))
        rows.append({"task": name, "model": model, "layer": -1, "accuracy": _acc(pred, r.test.answers)})
        test_h, train_h = hidden_maps(vlm, r.test, test_p), hidden_maps(vlm, r.train, train_p)
        for layer, (th, tr) in enumerate(zip(test_h, train_h)):
            pred = readout(r.test, th, r.train, tr)
            rows.append({"task": name, "model": model, "layer": layer, "accuracy": _acc(pred, r.test.answers)})
    return pd.DataFrame(rows)


def finetune_variants(vlm: TinyVLM, runs: dict[str, TaskRun], model: str, image_preds: dict, soft_tokens=(1, 5, 10),
                      lora_rank: int = 8, components=("lora", "projector", "vision"),
                      config=None, workers: int = 1, cache=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fine-tune each variant on each task's training questions; evaluate on its test questions.

    ``image_preds``: the original model's test predictions per task (``readout_vs_vlm``). Returns
    ``finetune`` (``task, variant, n_tokens_or_rank, accuracy``; the original model as variant
    ``original`` with 0) and ``tv`` (``task, model, variant, tv``: TV distance between the predicted and
    the true letter distributions). ``workers > 1`` trains that many variants at once in CPU processes
    (``vlmlab.runtime.process_map``), the costliest first (``finetune_cost``); every variant is seeded alone,
    so the order does not matter, and the tables change only through floating-point summation order where a
    worker has fewer torch threads than this process.
    ``cache`` (a ``FeatureCache``): each variant's test predictions are kept there and a rerun with the
    same model, data, config and fine-tuning code loads them (``finetune_key``) instead of training.
    """
    from vlmlab.blind.finetune import FinetuneConfig

    config = config or FinetuneConfig()

    def tune(plan: list[tuple[str, str, int]]) -> list[np.ndarray]:
        data = {name: (r.train, r.train_patches, r.test, r.test_patches) for name, r in runs.items()}
        keys = None if cache is None else _finetune_keys(tensor_digest(*vlm.state_dict().values()), config, data, plan)
        return _tune_cached(_tuned_predictions, plan, (vlm, config, data), cache, keys, workers,   # the tasks go
                            cost=lambda job: finetune_cost(data[job[0]][0], job[1]))             # once to each worker

    return _finetune_tables(runs, model, image_preds, soft_tokens, lora_rank, components, tune)


def _finetune_keys(model_id: str | None, config, data: dict, plan: list[tuple]) -> list[dict | None]:
    """``finetune_key`` of every job of ``plan`` (None for all when the model has no identity)."""
    if model_id is None:
        return [None] * len(plan)
    digests = {name: _data_digest(data[name]) for name in dict.fromkeys(job[0] for job in plan)}
    return [finetune_key(model_id, config, digests[job[0]], job) for job in plan]


def _tune_cached(train, plan: list[tuple], context, cache, keys: list[dict | None] | None, workers: int = 1,
                 cost=None) -> list[np.ndarray]:
    """Each job's test predictions: from ``cache`` where stored under its key, else ``train(context, job)`` (in
    ``workers`` processes, ``vlmlab.runtime.process_map``), each stored as it finishes, so an interrupted run
    keeps the variants it finished."""
    keys = keys or [None] * len(plan)
    out = [None if k is None or (hit := cache.get(k)) is None else hit["pred"].numpy() for k in keys]
    todo = [i for i, o in enumerate(out) if o is None]

    def keep(j: int, pred: np.ndarray) -> None:                      # as each variant finishes
        out[todo[j]] = pred
        if keys[todo[j]] is not None:
            cache.put(keys[todo[j]], {"pred": torch.as_tensor(pred)})

    process_map(train, [plan[i] for i in todo], context=context, workers=workers, desc="fine-tune variants",
                on_result=keep, cost=cost)
    return out


def finetune_cost(train: MCTask, variant: str) -> int:
    """A fine-tuning job's relative cost, by which the workers take the longest jobs first (less idle time
    at the end; the results do not depend on the order). The LM's sequence grows with the images per
    question, and ``vision`` also runs the trunk forward and backward, about twice the time of the others
    (measured on the embedded VLM, 100 steps, one thread: depth, 1 image, 2.9-3.8 s and 5.5 s with vision;
    correspondence, 2, 4.1-5.0 and 9.7; style, 3, 5.7-6.9 and 13.7; odd-one-out, 4, 7.4-8.4 and 17.2)."""
    return train.images.shape[1] * (2 if variant == "vision" else 1)


def _data_digest(data: tuple) -> str:
    """sha1 of a task's (train, train_patches, test, test_patches): the question sets pickled, the patches' bytes."""
    train, train_patches, test, test_patches = data
    questions = hashlib.sha1(pickle.dumps((train, test), protocol=4)).hexdigest()
    return questions + tensor_digest(train_patches, test_patches)


def finetune_key(model_id: str, config, data_digest: str, job: tuple) -> dict:
    """Cache key of one fine-tuning job (``vlmlab.runcache``): model weights, config, the task's data, the
    variant, and the fine-tuning code: this module, ``vlmlab.blind.finetune`` and every vlmlab module they
    import (``closure_fingerprint``)."""
    return {"kind": "vlm-finetune", "model": model_id, "config": dataclasses.asdict(config), "data": data_digest,
            "job": list(job), "code": closure_fingerprint(__name__, "vlmlab.blind.finetune")}


def _tuned_predictions(context, job) -> np.ndarray:
    """One fine-tuning job of ``finetune_variants`` (module-level: it may run in a worker process)."""
    from vlmlab.blind.finetune import finetune

    vlm, config, data = context
    name, variant, arg = job
    train, train_patches, test, test_patches = data[name]
    tuned = finetune(vlm, train, variant, arg, train_patches, config)
    if variant == "vision":                                     # the trunk changed: its tokens too
        test_patches = trunk_patches(tuned, test.images)
    return predictions(tuned, test, test_patches, n_soft=arg if variant == "prompt" else 0)


def _finetune_tables(runs: dict, model: str, image_preds: dict, soft_tokens, lora_rank: int, components,
                     tune) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``finetune`` and ``tv`` tables: per task, the original model, then every variant of the plan
    (prompt tuning per soft-token count, then the components); ``tune([(task, variant, arg), ...])`` gives
    the tuned copies' test predictions, in that order."""
    plan = [("prompt", n) for n in soft_tokens] + [(c, lora_rank if c == "lora" else 0) for c in components]
    jobs = [(name, variant, arg) for name in runs for variant, arg in plan]
    tuned = dict(zip(jobs, tune(jobs)))
    acc_rows, tv_rows = [], []
    for name, r in runs.items():
        k = r.test.n_options
        for variant, arg in [("original", 0)] + plan:
            pred = image_preds[name] if variant == "original" else tuned[name, variant, arg]
            acc_rows.append({"task": name, "variant": variant, "n_tokens_or_rank": arg,
                             "accuracy": _acc(pred, r.test.answers)})
            tv_rows.append({"task": name, "model": model, "variant": variant_label(variant, arg),
                            "tv": tv_to_labels(pred, r.test.answers, k)})
    return pd.DataFrame(acc_rows), pd.DataFrame(tv_rows)


# ------------------------------------------------------------------------------------ paper profile (LLaVA models)
@dataclasses.dataclass
class BenchmarkRun:
    """One real benchmark task asked to a LLaVA-family model (``vlmlab.blind.llava.LlavaScorer``).

    ``train`` / ``test``: a seeded split of the benchmark's questions (the depth probe and the fine-tuning
    variants learn from ``train``; everything is measured on ``test``); ``*_maps``: the model's own vision
    tower's patch maps (n, k, C, H, W), ``train_maps`` only where a readout is trained (depth);
    ``test_cls``: its [CLS] embeddings (n, k, D), the odd-one-out readout's input.
    """

    train: MCTask
    test: MCTask
    train_maps: Tensor | None
    test_maps: Tensor
    test_cls: Tensor


def _tower(scorer, images: np.ndarray) -> tuple[Tensor, Tensor]:
    maps, cls = scorer.vision_features(images.reshape(-1, *images.shape[2:]))
    return maps.view(*images.shape[:2], *maps.shape[1:]), cls.view(*images.shape[:2], -1)


def prepare_benchmarks(scorer, names, root=None, train_fraction: float = 0.5, seed: int = 0, size: int = 336,
                       n_test: int | None = None) -> dict[str, BenchmarkRun]:
    """Load each benchmark task (``vlmlab.blind.benchmarks``), split it (seeded) into ``train_fraction``
    training questions and the rest, and encode the images with the model's own tower. ``n_test`` caps
    the test questions of every task (``None``: all)."""
    from vlmlab.blind.benchmarks import load_benchmark, split, subset

    runs = {}
    for name in progress(names, desc="benchmarks"):
        task = load_benchmark(name, root, size)
        train, test = split(task, int(round(train_fraction * len(task))), seed)
        if n_test is not None and n_test < len(test):
            test = subset(test, np.arange(n_test))
        test_maps, test_cls = _tower(scorer, test.images)
        train_maps = _tower(scorer, train.images)[0] if test.readout_kind == "depth" else None
        runs[name] = BenchmarkRun(train, test, train_maps, test_maps, test_cls)
    return runs


def scorer_predictions(scorer, task: MCTask, white: bool = False) -> np.ndarray:
    """(n,) the option a LLaVA model's letter scores pick; ``white``: every image replaced by a white one."""
    from vlmlab.blind.llava import canvas

    images = blank(task).images if white else task.images
    lp = scorer.option_logprobs([canvas(q) for q in images], task.question_texts(), task.n_options)
    return lp.argmax(-1).numpy()


def benchmark_readout_vs_vlm(scorer, runs: dict[str, BenchmarkRun], model: str) -> tuple[pd.DataFrame, dict]:
    """``readout_vs_vlm`` for a LLaVA model: its own vision tower read out vs its letter answers."""
    readout_preds, preds = {}, {}
    for name, r in progress(runs.items(), desc="readout vs VLM", total=len(runs)):
        if r.test.readout_kind == "odd_one_out":
            readout_preds[name] = odd_one_out_readout(F.normalize(r.test_cls, dim=-1)).numpy()
        else:
            readout_preds[name] = readout(r.test, r.test_maps, r.train, r.train_maps)
        preds[name] = scorer_predictions(scorer, r.test)
    return accuracy_table({n: r.test for n, r in runs.items()}, model, readout_preds, preds), preds


def benchmark_blind_test(scorer, runs: dict[str, BenchmarkRun], model: str,
                         image_preds: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``blind_test`` for a LLaVA model."""
    blank_preds = {name: scorer_predictions(scorer, r.test, white=True) for name, r in runs.items()}
    return blind_tables({n: r.test for n, r in runs.items()}, model, image_preds, blank_preds)


def _llava_hidden(scorer, task: MCTask, layers, pool: int) -> Tensor:
    """(len(layers), n, k, d, pool, pool) float16 hidden-state maps of every question's images."""
    texts = task.question_texts()
    return torch.stack([scorer.image_hidden_maps(task.images[i], texts[i], task.n_options, layers, pool).half()
                        for i in progress(range(len(task)), desc=f"hidden states: {task.name}")], 1)


def benchmark_layer_probe(scorer, runs: dict[str, BenchmarkRun], model: str, layers=None,
                          pool: int = 8) -> pd.DataFrame:
    """``layer_probe`` for a LLaVA model: the readouts on its vision tower's maps (layer -1) and on the LM's
    hidden states at each image's tokens (``LlavaScorer.image_hidden_maps``, pooled to ``pool`` x ``pool``;
    odd-one-out reads the mean token) at ``layers`` (default: every 4th and the last)."""
    if layers is None:
        layers = sorted(set(range(0, scorer.n_layers + 1, 4)) | {scorer.n_layers})
    rows = []
    for name, r in runs.items():
        p = 1 if r.test.readout_kind == "odd_one_out" else pool
        pred = readout(r.test, r.test_maps, r.train, r.train_maps)
        rows.append({"task": name, "model": model, "layer": -1, "accuracy": _acc(pred, r.test.answers)})
        test_h = _llava_hidden(scorer, r.test, layers, p)
        train_h = _llava_hidden(scorer, r.train, layers, p) if r.test.readout_kind == "depth" else None
        for j, layer in enumerate(layers):
            pred = readout(r.test, test_h[j].float(), r.train, None if train_h is None else train_h[j].float())
            rows.append({"task": name, "model": model, "layer": layer, "accuracy": _acc(pred, r.test.answers)})
    return pd.DataFrame(rows)


def benchmark_finetune_variants(scorer, runs: dict[str, BenchmarkRun], model: str, image_preds: dict,
                                soft_tokens=(1, 5, 10), lora_rank: int = 8, components=("lora", "projector", "vision"),
                                config=None, cache=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``finetune_variants`` for a LLaVA model (``vlmlab.blind.finetune.finetune_llava``); same tables.

    ``cache`` (a ``FeatureCache``): each variant's test predictions are stored as it finishes, keyed by the
    checkpoint's files and dtype (``LlavaScorer.identity``), the task's questions, the config, the variant and
    the fine-tuning code (``finetune_key``), so a rerun, or a notebook stopped part-way, loads them instead of
    training again (the notebook's fine-tunings take most of its GPU hour on an H200)."""
    from vlmlab.blind.finetune import FinetuneConfig

    config = config or FinetuneConfig()

    def tune(plan: list[tuple[str, str, int]]) -> list[np.ndarray]:
        data = {name: (r.train, None, r.test, None) for name, r in runs.items()}
        keys = None if cache is None else _finetune_keys(scorer.identity, config, data, plan)
        return _tune_cached(_tuned_llava_predictions, plan, (scorer, config, runs), cache, keys)

    return _finetune_tables(runs, model, image_preds, soft_tokens, lora_rank, components, tune)


def _tuned_llava_predictions(context, job) -> np.ndarray:
    """One fine-tuning job of ``benchmark_finetune_variants``: the tuned copy's test predictions."""
    from vlmlab.blind.finetune import finetune_llava

    scorer, config, runs = context
    name, variant, arg = job
    return scorer_predictions(finetune_llava(scorer, runs[name].train, variant, arg, config), runs[name].test)
