import copy
import pickle

import numpy as np
import pytest
import torch

from fss_demo.head import ConvLSTMCell

from .helpers import configured


def test_segment_gives_one_mask_per_step_at_query_size(tiny_model, square_episode):
    (query, _), supports = square_episode
    seg = tiny_model.segment(query, supports, trace=True)
    assert len(seg.masks) == len(seg.probabilities) == len(seg.or_masks) == len(seg.gates) == 3
    for mask, probability in zip(seg.masks, seg.probabilities):
        assert mask.shape == query.shape[:2] and mask.dtype == bool
        assert probability.dtype == np.float32 and 0 <= probability.min() and probability.max() <= 1
    assert set(seg.gates[0]) == {"input_gate", "forget_gate", "output_gate", "candidate", "cell", "hidden"}
    assert seg.gates[0]["input_gate"].ndim == 3
    assert tiny_model.segment(query, supports).gates == []


def test_first_step_equals_the_first_support_alone(tiny_model, square_episode):
    (query, _), supports = square_episode
    seg = tiny_model.segment(query, supports)
    np.testing.assert_array_equal(seg.masks[0], seg.or_masks[0])
    for earlier, later in zip(seg.or_masks, seg.or_masks[1:]):  # OR only ever adds pixels
        assert (later | earlier).sum() == later.sum()


def test_each_support_s_1_shot_answer_is_what_it_gives_alone(tiny_model, square_episode):
    """The OR's inputs, and what the fusion's gated maximum keeps, are the model's real 1-shot answers."""
    (query, _), supports = square_episode
    seg = tiny_model.segment(query, supports)
    for support, alone in zip(supports, seg.one_shot_probabilities):
        np.testing.assert_allclose(tiny_model.segment(query, [support]).probabilities[0], alone, atol=1e-5)


def test_what_one_support_finds_reaches_the_fused_answer(tiny_model, square_episode, monkeypatch):
    """The answer after step k is corrected towards the gated maximum of the 1-shot answers: change what
    support 2 finds alone, and steps 2 and 3 change with it (step 1 does not)."""
    (query, _), supports = square_episode
    head = tiny_model.head
    plain = tiny_model.segment(query, supports)
    real, calls = type(head).alone_all, []

    def louder_second_alone(self, context, passes):
        real(self, context, passes)
        calls.append(1)
        if len(calls) == 1:  # the first call works out supports 2 and 3 alone: make support 2 find more
            passes[0].alone = (passes[0].alone[0] + 5, passes[0].alone[1])

    # on the class: patching the instance would leave a bound method on it after the test
    monkeypatch.setattr(type(head), "alone_all", louder_second_alone)
    changed = tiny_model.segment(query, supports)
    np.testing.assert_allclose(changed.probabilities[0], plain.probabilities[0], atol=1e-6)
    assert all(np.abs(changed.probabilities[k] - plain.probabilities[k]).max() > 1e-3 for k in (1, 2))


def test_any_input_size_works():
    cell = ConvLSTMCell(4, 8)
    for size in [(5, 7), (13, 11)]:
        x = torch.randn(2, 4, *size)
        (h, c), gates = cell(x, cell.zero_state(x))
        assert h.shape == (2, 8, *size) and gates["forget_gate"].shape == h.shape


def test_support_features_are_reused(tiny_model, square_episode):
    (query, _), supports = square_episode
    tiny_model.clear_cache()
    tiny_model.segment(query, supports)
    calls = []
    hook = tiny_model.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        tiny_model.segment(query[::-1].copy(), supports)
    finally:
        hook.remove()
    assert len(calls) == 1  # only the new query went through the backbone


def test_bad_input_gives_readable_errors(tiny_model, square_episode, tmp_path):
    (query, _), supports = square_episode
    image, mask = supports[0]
    with pytest.raises(ValueError, match="^supports: give at least one support photo"):
        tiny_model.segment(query, [])
    with pytest.raises(ValueError, match="^supports: 11 given; at most 10 are taken.$"):
        tiny_model.segment(query, [(image, mask)] * 11)
    with pytest.raises(ValueError, match="^Support 2: the mask is empty; mark the object on the image.$"):
        tiny_model.segment(query, [(image, mask), (image, np.zeros_like(mask))])
    with pytest.raises(ValueError, match="whole image"):
        tiny_model.segment(query, [(image, np.ones_like(mask))])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00\x01 not a jpeg")
    with pytest.raises(ValueError, match="^The query image: 'junk.jpg' is not an image"):
        tiny_model.segment(str(junk), supports)
    with pytest.raises(ValueError, match="^Support 1's mask: 'junk.jpg' is not an image"):
        tiny_model.segment(query, [(image, str(junk))])
    with pytest.raises(ValueError, match="pair"):
        tiny_model.segment(query, [image])
    # a mask of another size is resized, and the model still works after all of the above
    small_mask = mask[::2, ::2]
    assert len(tiny_model.segment(query, [(image, small_mask)]).masks) == 1


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "mobilenet_v2", "mobilenet_v2+efficientnet_lite0",
                                      "mobilenet_v2+efficientnet_lite0_cues"])
def test_the_backbone_choice_is_saved_with_the_model(backbone, square_episode, tmp_path):
    from fss_demo import FewShotSegmenter, ModelConfig

    (query, _), supports = square_episode
    torch.manual_seed(0)
    model = FewShotSegmenter(ModelConfig(backbone=backbone, input_size=64, width=16, hidden=16))
    model.save_pretrained(tmp_path)
    loaded = FewShotSegmenter.from_pretrained(tmp_path)
    assert type(loaded.backbone) is type(model.backbone) and loaded.config == model.config
    np.testing.assert_array_equal(loaded.segment(query, supports).probabilities[-1], model.segment(query, supports).probabilities[-1])


def test_masks_of_a_photo_over_2048_pixels_come_back_at_its_own_size(tiny_model, square_episode):
    from PIL import Image

    (query, _), supports = square_episode
    big = np.asarray(Image.fromarray(query).resize((3000, 2200)))
    seg = tiny_model.segment(big, supports)
    assert all(mask.shape == (2200, 3000) for mask in seg.masks + seg.or_masks)
    assert seg.probabilities[0].shape == (1502, 2048)  # worked out at 2048 on the longer side
    shrunk = tiny_model.segment(np.asarray(Image.fromarray(big).resize((2048, 1502), Image.BILINEAR)), supports)
    np.testing.assert_array_equal(np.asarray(Image.fromarray(shrunk.masks[-1]).resize((3000, 2200), Image.NEAREST)),
                                  seg.masks[-1])


def test_a_support_the_gate_keeps_out_changes_nothing():
    """The decoder reads supports only through the gates: with weight 0 the evidence memory stays as it was."""
    from fss_demo.head import EvidenceMemory

    torch.manual_seed(0)
    first, second = torch.rand(2, 5, 6, 6), torch.rand(2, 5, 6, 6)
    memory = EvidenceMemory(first).add(first, torch.full((2, 1, 6, 6), 0.7))
    mean, maximum = memory.mean().clone(), memory.maximum.clone()
    memory.add(second, torch.zeros(2, 1, 6, 6))
    torch.testing.assert_close(memory.mean(), mean)
    torch.testing.assert_close(memory.maximum, maximum)
    memory.add(second, torch.ones(2, 1, 6, 6))  # let in fully: a plain running mean and maximum
    torch.testing.assert_close(memory.mean(), (0.7 * first + second) / 1.7)
    torch.testing.assert_close(memory.maximum, torch.maximum(first, second))


def test_forcing_the_input_gate_open_changes_only_later_steps(tiny_model, square_episode):
    (query, _), supports = square_episode
    levels = tiny_model.features(query)
    prepared = [tiny_model._support_features(*pair) for pair in supports]
    with torch.inference_mode():
        normal = tiny_model.head(levels, [f for f, _ in prepared], [m for _, m in prepared], one_shot=False).steps
        forced = tiny_model.head(levels, [f for f, _ in prepared], [m for _, m in prepared], one_shot=False,
                                 open_gate_at=(2,)).steps
    torch.testing.assert_close(forced[0], normal[0])
    assert not torch.allclose(forced[1], normal[1])


def test_a_config_json_with_retired_settings_loads_only_at_their_one_value(tmp_path, tiny_model):
    """Settings of earlier versions that now have one value (config.json of fss-demo 0.2): at that value the model
    loads; at another (an older head's, a 1x1 ConvLSTM input) the error says why its weights cannot fit."""
    import json

    from fss_demo import FewShotSegmenter

    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    old = {"fusion": "gated", "lstm_input_kernel": 3, "max_guidance": True, "prior_levels": [1, 2]}
    (tmp_path / "config.json").write_text(json.dumps({**config, **old}))
    assert FewShotSegmenter.from_pretrained(tmp_path).config == tiny_model.config
    (tmp_path / "config.json").write_text(json.dumps({**config, **old, "lstm_input_kernel": 1}))
    with pytest.raises(ValueError, match="sets lstm_input_kernel=1: this version has only lstm_input_kernel=3"):
        FewShotSegmenter.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "colour": "red"}))
    with pytest.raises(ValueError, match=r"settings this version does not know: \['colour'\]"):
        FewShotSegmenter.from_pretrained(tmp_path)


def test_a_config_json_without_decoder_cue_is_a_v0_4_model_and_keeps_its_mean_cue(tmp_path, tiny_model):
    """fss-demo 0.4's config.json has no decoder_cue: its weights were trained with the mean-prototype cue, so it
    must load with that cue (same tensors, other outputs otherwise). An unknown cue is refused by name."""
    import json

    from fss_demo import FewShotSegmenter

    assert tiny_model.config.decoder_cue == "max"
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["decoder_cue"] == "max"
    assert FewShotSegmenter.from_pretrained(tmp_path).head.decoder_cue == "max"
    del config["decoder_cue"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert FewShotSegmenter.from_pretrained(tmp_path).head.decoder_cue == "mean"
    (tmp_path / "config.json").write_text(json.dumps({**config, "decoder_cue": "median"}))
    with pytest.raises(ValueError, match=r"decoder_cue='median': known cues are \('max', 'mean'\)"):
        FewShotSegmenter.from_pretrained(tmp_path)


def test_the_two_decoder_cues_agree_on_one_support_and_part_after_two(tiny_model, square_episode):
    """With one support the gated maximum of the supports' cosines and the cosine to their mean prototype are the
    same map; from step 2 they are not, and the cue in use is the one the answer follows."""
    (query, _), supports = square_episode
    with_max = tiny_model.segment(query, supports)
    with configured(tiny_model, decoder_cue="mean"):  # acts at once, as the threshold
        assert tiny_model.head.decoder_cue == "mean"
        with_mean = tiny_model.segment(query, supports)
    assert tiny_model.head.decoder_cue == "max"
    np.testing.assert_allclose(with_mean.probabilities[0], with_max.probabilities[0], atol=1e-5)
    assert np.abs(with_mean.probabilities[2] - with_max.probabilities[2]).max() > 1e-3


def test_supports_may_be_any_iterable_up_to_the_cap(tiny_model, square_episode):
    (query, _), supports = square_episode
    from_generator = tiny_model.segment(query, (pair for pair in supports))
    np.testing.assert_array_equal(from_generator.probabilities[-1], tiny_model.segment(query, supports).probabilities[-1])
    from fss_demo import MAX_SUPPORTS

    with pytest.raises(ValueError, match=f"^supports: 11 given; at most {MAX_SUPPORTS} are taken.$"):
        tiny_model.segment(query, [supports[0]] * (MAX_SUPPORTS + 1))
    with pytest.raises(ValueError, match=r"supports: expected a list of \(image, mask\) pairs"):
        tiny_model.segment(query, supports[0][0])


def test_a_support_the_admission_gate_keeps_out_leaves_state_and_answer_unchanged():
    """Admission 0: the ConvLSTM neither writes nor forgets, and the memory adds nothing, so the step's answer
    is the previous step's; admission 1 is the plain ConvLSTM step."""
    from fss_demo.head import ConvLSTMCell

    torch.manual_seed(0)
    cell = ConvLSTMCell(4, 8)
    x, state = torch.randn(2, 4, 5, 5), (torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5))
    (h, c), gates = cell(x, state, admission=torch.zeros(2, 1, 1, 1))
    torch.testing.assert_close(h, state[0])
    torch.testing.assert_close(c, state[1])
    assert float(gates["input_gate"].detach().abs().max()) == 0
    plain, _ = cell(x, state)
    admitted, _ = cell(x, state, admission=torch.ones(2, 1, 1, 1))
    torch.testing.assert_close(admitted[0], plain[0])


def test_a_closed_admission_gate_repeats_the_previous_answer(tiny_model, square_episode, monkeypatch):
    (query, _), supports = square_episode
    head = tiny_model.head
    monkeypatch.setattr(head.support_gate, "forward", lambda stats: torch.zeros(stats.shape[0], 1, 1, 1))
    seg = tiny_model.segment(query, supports)
    assert seg.admissions == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(seg.probabilities[2], seg.probabilities[0], atol=1e-6)
    np.testing.assert_allclose(seg.probabilities[1], seg.probabilities[0], atol=1e-6)


def test_a_support_the_gate_keeps_out_is_as_if_it_had_been_left_out(tiny_model, square_episode, monkeypatch):
    """Admission 0 at step 2 only: every later step, and so the final answer, is the answer without support 2.
    So `evaluate --corrupt`'s "support 2 left out" row is what a perfect admission gate would give."""
    (query, _), supports = square_episode
    gate = tiny_model.head.support_gate
    real, calls = gate.forward, []

    def closed_at_step_two(stats):
        calls.append(stats)
        return torch.zeros(stats.shape[0], 1, 1, 1) if len(calls) == 1 else real(stats)

    monkeypatch.setattr(gate, "forward", closed_at_step_two)
    kept_out = tiny_model.segment(query, supports)
    monkeypatch.undo()
    assert kept_out.admissions[1] == 0.0 and 0 < kept_out.admissions[2] < 1
    left_out = tiny_model.leave_one_out(query, supports)[1]
    np.testing.assert_allclose(kept_out.probabilities[-1], left_out, atol=1e-6)
    assert np.abs(tiny_model.segment(query, supports).probabilities[-1] - left_out).max() > 1e-4  # gate open: not


def test_admissions_are_reported_and_the_first_support_is_always_let_in(tiny_model, square_episode):
    (query, _), supports = square_episode
    seg = tiny_model.segment(query, supports)
    assert len(seg.admissions) == 3 and seg.admissions[0] == 1.0
    assert all(0 < a < 1 for a in seg.admissions[1:])


def test_leave_one_out_runs_the_head_without_each_support(tiny_model, square_episode):
    (query, _), supports = square_episode
    answers = tiny_model.leave_one_out(query, supports)
    assert len(answers) == 3 and all(a.shape == query.shape[:2] for a in answers)
    # leaving out the last support gives the answer after the first two
    seg = tiny_model.segment(query, supports)
    np.testing.assert_allclose(answers[2], seg.probabilities[1], atol=1e-6)
    without_first = tiny_model.segment(query, supports[1:])
    np.testing.assert_allclose(answers[0], without_first.probabilities[-1], atol=1e-6)
    assert tiny_model.leave_one_out(query, supports[:1]) == [None]


def test_the_last_query_goes_through_the_backbone_once(tiny_model, square_episode):
    """The app runs leave_one_out right after segment on the same query: no second backbone pass. A new query, or a
    cleared cache, takes one."""
    (query, _), supports = square_episode
    tiny_model.segment(query, supports)
    calls = []
    hook = tiny_model.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        tiny_model.leave_one_out(query, supports)
        tiny_model.segment(query, supports)
        assert calls == []
        tiny_model.segment(query[::-1].copy(), supports)
        assert len(calls) == 1
        tiny_model.clear_cache()
        tiny_model.leave_one_out(query, supports)
        assert len(calls) == 2 + len(supports)  # the query and every support again
    finally:
        hook.remove()


def test_leave_one_out_works_out_each_supports_order_free_part_once(tiny_model, square_episode, monkeypatch):
    """Its K runs reuse each support's evidence and answer alone: with 3 supports, 3 evidence passes (before: 6)
    and 2 answers alone (before: 3; support 1 is first wherever it is run, where the step itself is that answer)."""
    from fss_demo.head import FusionHead

    (query, _), supports = square_episode
    calls = {"read_supports": 0, "alone_all": 0}
    for name in calls:
        real = getattr(FusionHead, name)
        def counted(self, context, passes_or_supports, *args, _real=real, _name=name, **kwargs):
            # supports read, or passes worked out alone (those with no answer alone yet)
            calls[_name] += sum(1 for p in passes_or_supports if _name == "read_supports" or p.alone is None)
            return _real(self, context, passes_or_supports, *args, **kwargs)
        monkeypatch.setattr(FusionHead, name, counted)
    tiny_model.leave_one_out(query, supports)
    assert calls == {"read_supports": 3, "alone_all": 2}


def test_agreement_reads_the_mask_means_of_the_remembered_similarity_map():
    """The admission gate's in-mask and out-of-mask similarity statistics are the means, over the support's mask and
    its outside, of the support picture's cosine map to the remembered prototype (computed without the map)."""
    from fss_demo.head import (EvidenceMemory, agreement, cosine_map, masked_average, prototype_features,
                                resize_mask, summarise_support)

    torch.manual_seed(0)
    levels = lambda: [torch.rand(2, 4, 8, 8), torch.rand(2, 6, 4, 4), torch.rand(2, 5, 2, 2)]
    mask_of = lambda: (torch.rand(2, 1, 32, 32) > 0.5).float()
    first, first_mask, support, mask = levels(), mask_of(), levels(), mask_of()
    evidence = torch.rand(2, 3, 8, 8)
    memory = EvidenceMemory(evidence).add(evidence, torch.ones(2, 1, 8, 8),
                                          summarise_support(first, first_mask).prototypes, torch.ones(2, 1))
    stats = agreement(summarise_support(support, mask), memory.prototypes(), torch.rand(2, 1, 8, 8),
                      torch.rand(2, 1, 8, 8))
    # per level: cosine of the object and background prototypes, then the similarity map's mean inside and outside
    for column, level, remembered in [(2, prototype_features(support), memory.prototypes()[0]),
                                      (6, support[2], memory.prototypes()[1])]:
        inside, similarity = resize_mask(mask, level), cosine_map(level, remembered)
        torch.testing.assert_close(stats[:, column], masked_average(similarity, inside)[:, 0])
        torch.testing.assert_close(stats[:, column + 1], masked_average(similarity, 1 - inside)[:, 0])


def test_the_gate_calibration_is_a_sharper_later_closing_sigmoid_and_is_saved(tmp_path, tiny_model, square_episode):
    """The admission is sigmoid(scale * (logit - shift)); changing the config changes it at once, it is saved in
    config.json, and a config.json without it (fss-demo 0.5's) loads as the gate was trained (1, 0)."""
    import json

    from fss_demo import FewShotSegmenter

    (query, _), supports = square_episode
    gate = tiny_model.head.support_gate
    stats = torch.randn(4, gate.net[0].in_features)
    with torch.no_grad():
        logit = gate.net(stats)
        trained = tiny_model.segment(query, supports).admissions
        with configured(tiny_model, gate_scale=3.0, gate_shift=1.5):
            torch.testing.assert_close(gate(stats).flatten(), torch.sigmoid(3 * (logit - 1.5)).flatten())
            calibrated = tiny_model.segment(query, supports).admissions
            tiny_model.save_pretrained(tmp_path)
        torch.testing.assert_close(gate(stats).flatten(), torch.sigmoid(logit).flatten())
    assert calibrated[0] == trained[0] == 1.0  # the first support is always let in
    # step 2 reads the same memory either way, so its logit is the same, mapped through the calibrated sigmoid (later
    # steps read a memory that step 2's admission already changed)
    logit_2 = np.log(trained[1] / (1 - trained[1]))
    assert abs(calibrated[1] - 1 / (1 + np.exp(-3 * (logit_2 - 1.5)))) < 1e-4
    loaded = FewShotSegmenter.from_pretrained(tmp_path)
    assert (loaded.head.support_gate.scale, loaded.head.support_gate.shift) == (3.0, 1.5)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["gate_scale"], config["gate_shift"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = FewShotSegmenter.from_pretrained(tmp_path)
    assert (loaded.head.support_gate.scale, loaded.head.support_gate.shift) == (1.0, 0.0)


def test_a_copied_model_answers_alike_and_keeps_caches_of_its_own(tiny_model, square_episode):
    """copy.deepcopy and pickle work (the support cache's lock is not copied: each copy gets empty caches)."""
    (query, _), supports = square_episode
    before = tiny_model.segment(query, supports).probabilities[-1]
    for twin in (copy.deepcopy(tiny_model), pickle.loads(pickle.dumps(tiny_model))):
        assert len(twin._support_cache) == 0 and twin._last_query is None
        np.testing.assert_array_equal(twin.segment(query, supports).probabilities[-1], before)
        assert twin._support_cache is not tiny_model._support_cache and len(tiny_model._support_cache) > 0


def test_a_model_with_cue_blocks_saves_loads_and_segments(square_episode, tmp_path):
    """Cue blocks (HSNet-style cues from intermediate backbone blocks) are part of the config: a saved model
    loads with the same backbone outputs and head, and gives the same answer."""
    import json

    from fss_demo import FewShotSegmenter, ModelConfig

    (query, _), supports = square_episode
    torch.manual_seed(0)
    model = FewShotSegmenter(ModelConfig(input_size=64, width=16, hidden=16, cue_blocks=(4, 8, 15)))
    plain = FewShotSegmenter(ModelConfig(input_size=64, width=16, hidden=16))
    # three more evidence channels: into the ConvLSTM's input and, as mean and maximum, into the decoder
    assert model.head.guide_proj.in_channels == plain.head.guide_proj.in_channels + 3
    assert model.head.decoder[0].in_channels == plain.head.decoder[0].in_channels + 6
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["cue_blocks"] == [4, 8, 15]
    loaded = FewShotSegmenter.from_pretrained(tmp_path)
    assert loaded.config == model.config and loaded.backbone.cue_blocks == (4, 8, 15)
    seg = loaded.segment(query, supports)
    np.testing.assert_array_equal(seg.probabilities[-1], model.segment(query, supports).probabilities[-1])
    assert len(seg.masks) == len(supports)


def test_self_support_brings_in_what_looks_like_the_found_object_in_the_same_query():
    """The query's own prototypes: a second instance the answer missed (same features as the found one) rises, the
    background falls; a query with no confident object, or weight 0, is left as it was."""
    import torch.nn.functional as F

    from fss_demo.head import self_support

    features = torch.zeros(1, 4, 8, 8)
    features[0, 0] = 1.0                   # background
    features[0, :, 1:3, 1:3] = torch.tensor([0.0, 1.0, 0.2, 0.0])[:, None, None]  # the found instance
    features[0, :, 5:7, 5:7] = torch.tensor([0.0, 0.9, 0.3, 0.0])[:, None, None]  # another, alike, not found
    units = F.normalize(features, dim=1)
    logits = torch.full((1, 1, 8, 8), -3.0)
    logits[0, 0, 1:3, 1:3] = 3.0
    refined = self_support(logits, units, 2.0)
    change = refined - logits
    assert change[0, 0, 5:7, 5:7].min() > 1.5        # nearly the found instance's own rise (2 x (cos 1 - cos 0))
    assert change[0, 0, 1:3, 1:3].min() > 1.5
    assert change[0, 0, 0, 5].item() < -1.5         # the background: nearer its own prototype
    assert self_support(logits, units, 0.0) is logits
    unsure = torch.full((1, 1, 8, 8), -3.0)       # nothing found: nothing to match
    torch.testing.assert_close(self_support(unsure, units, 2.0), unsure)


def test_self_support_acts_on_every_answer_and_is_saved(tmp_path, tiny_model, square_episode):
    """ModelConfig.self_support refines the fused answers and the 1-shot answers alike (the OR and the mean fuse
    what the model gives), acts at once, is saved in config.json, and a config.json without it loads with it off."""
    (query, _), supports = square_episode
    plain = tiny_model.segment(query, supports)
    refined = segmented_with(tiny_model, query, supports, tmp_path, self_support=0.5)
    for before, after in zip(plain.probabilities + plain.one_shot_probabilities,
                             refined.probabilities + refined.one_shot_probabilities):
        assert np.abs(after - before).max() > 1e-3
    np.testing.assert_array_equal(refined.probabilities[0], refined.one_shot_probabilities[0])
    np.testing.assert_array_equal(tiny_model.segment(query, supports).probabilities[-1], plain.probabilities[-1])
    assert_saved_and_off_when_absent(tmp_path, "self_support", 0.5, off=0.0)


def test_self_support_that_grows_with_the_supports_leaves_a_lone_support_alone(tmp_path, tiny_model, square_episode):
    """ModelConfig.self_support_grows puts self-support on the discriminant's schedule, weight * (1 - 1/n), n the
    supports let in: a lone support's answer (step 1, every 1-shot answer) is as without self-support, and later
    steps lie between the plain answer and the one at the full weight. Saved, and off when absent."""
    (query, _), supports = square_episode
    plain = tiny_model.segment(query, supports)
    full = segmented_with(tiny_model, query, supports, tmp_path, self_support=0.5)
    grows = segmented_with(tiny_model, query, supports, tmp_path, self_support=0.5, self_support_grows=True)
    np.testing.assert_allclose(grows.probabilities[0], plain.probabilities[0], atol=1e-6)
    for alone, before in zip(grows.one_shot_probabilities, plain.one_shot_probabilities):
        np.testing.assert_allclose(alone, before, atol=1e-6)
    for step in (1, 2):
        low = np.minimum(plain.probabilities[step], full.probabilities[step])
        high = np.maximum(plain.probabilities[step], full.probabilities[step])
        assert np.all(grows.probabilities[step] >= low - 1e-6) and np.all(grows.probabilities[step] <= high + 1e-6)
        assert np.abs(grows.probabilities[step] - plain.probabilities[step]).max() > 1e-3
    assert_saved_and_off_when_absent(tmp_path, "self_support_grows", True, off=False)


def segmented_with(model, query, supports, save_to, **settings):
    """model.segment with `settings` in its config, the model then saved into save_to; its config is put back."""
    with configured(model, **settings):
        segmentation = model.segment(query, supports)
        model.save_pretrained(save_to)
    return segmentation


def assert_saved_and_off_when_absent(folder, name, value, off):
    """The head setting `name` was saved in folder's config.json at `value`, and a config.json without it (an older
    model's) loads with it at `off`."""
    import json

    from fss_demo import FewShotSegmenter

    assert getattr(FewShotSegmenter.from_pretrained(folder).head, name) == value
    config = json.loads((folder / "config.json").read_text())
    del config[name]
    (folder / "config.json").write_text(json.dumps(config))
    assert getattr(FewShotSegmenter.from_pretrained(folder).head, name) == off


def test_the_discriminant_finds_what_looks_like_the_supports_objects():
    """head.discriminant_logits on features made to order: object pixels near one direction, background pixels
    near another. Fitted on two supports' statistics, it gives the query's object pixels positive log-odds and its
    background negative; the statistics of a support added at weight 0 change nothing."""
    from fss_demo.head import discriminant_logits, pixel_statistics

    generator = torch.Generator().manual_seed(0)

    def picture(object_rows):
        features = torch.zeros(1, 4, 8, 8)
        features[:, 1] = 1.0  # background
        features[:, :, object_rows, 2:6] = torch.tensor([1.0, 0, 0, 0])[:, None, None]
        mask = torch.zeros(1, 1, 8, 8)
        mask[:, :, object_rows, 2:6] = 1
        return features + 0.1 * torch.randn(features.shape, generator=generator), mask

    first, second = pixel_statistics(*picture(slice(1, 4))), pixel_statistics(*picture(slice(4, 7)))
    both = first.add(second, torch.ones(1, 1, 1, 1))
    torch.testing.assert_close(both.weights, first.weights + second.weights)  # two supports at weight 1 add up
    query, truth = picture(slice(2, 6))
    logits = discriminant_logits(query, both)
    assert logits.shape == (1, 1, 8, 8)
    assert logits[truth.bool()].min() > 2 and logits[~truth.bool()].max() < -2
    unchanged = first.add(second, torch.zeros(1, 1, 1, 1))
    for ours, theirs in zip(unchanged, first):
        torch.testing.assert_close(ours, theirs)
    # blank pictures (every pixel alike): no covariance to factor, and still an answer, not an error
    blank = torch.ones(1, 4, 8, 8)
    blank_logits = discriminant_logits(blank, pixel_statistics(blank, picture(slice(1, 4))[1]))
    assert torch.isfinite(blank_logits).all() and blank_logits.std() == 0


def test_the_discriminant_is_fitted_in_float32_under_bfloat16_autocast():
    """Training runs the head under bfloat16 autocast: the discriminant's sums of products and its fit must still be
    float32, and give the answer they give without autocast."""
    from fss_demo.head import discriminant_logits, pixel_statistics

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 16, 8, 8, generator=generator)
    mask = (torch.rand(2, 1, 32, 32, generator=generator) > 0.5).float()
    plain = discriminant_logits(features, pixel_statistics(features, mask))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        statistics = pixel_statistics(features.bfloat16(), mask)
        logits = discriminant_logits(features.bfloat16(), statistics)
    assert statistics.products.dtype == torch.float32 and logits.dtype == torch.float32
    torch.testing.assert_close(logits, plain, atol=0.05, rtol=0.02)  # the query's features were rounded to bfloat16


def test_the_discriminant_joins_from_the_second_support_and_is_saved(tmp_path, tiny_model, square_episode):
    """ModelConfig.discriminant leaves every 1-shot answer (and so the OR) and the first step as they were, changes
    the fused answers from step 2 on, acts at once, is saved, and a config.json without it loads with it off."""
    (query, _), supports = square_episode
    plain = tiny_model.segment(query, supports)
    with_it = segmented_with(tiny_model, query, supports, tmp_path, discriminant=0.5)
    for before, after in zip(plain.one_shot_probabilities, with_it.one_shot_probabilities):
        np.testing.assert_allclose(after, before, atol=1e-6)
    np.testing.assert_allclose(with_it.probabilities[0], plain.probabilities[0], atol=1e-6)
    for before, after in zip(plain.probabilities[1:], with_it.probabilities[1:]):
        assert np.abs(after - before).max() > 1e-3
    np.testing.assert_array_equal(tiny_model.segment(query, supports).probabilities[-1], plain.probabilities[-1])
    assert_saved_and_off_when_absent(tmp_path, "discriminant", 0.5, off=0.0)


def test_the_discriminant_is_worked_out_only_where_its_weight_is_not_zero(tiny_model, square_episode, monkeypatch):
    """Its weight is 0 for a lone support, so a 1-shot call gathers no support pixels and fits nothing, and with two
    supports the fit starts at step 2 (the answers are those of test_the_discriminant_joins_...)."""
    from fss_demo import head

    (query, _), supports = square_episode
    calls = {"pixel_statistics": 0, "discriminant_logits": 0}
    for name in calls:
        real = getattr(head, name)
        def counted(*args, _real=real, _name=name):
            calls[_name] += len(args[0])  # samples: the supports are read as one batch
            return _real(*args)
        monkeypatch.setattr(head, name, counted)
    with configured(tiny_model, discriminant=0.5, rejudge_first=False):
        tiny_model.segment(query, supports[:1])
        assert calls == {"pixel_statistics": 0, "discriminant_logits": 0}
        tiny_model.segment(query, supports[:2])
        assert calls == {"pixel_statistics": 2, "discriminant_logits": 1}  # step 2's answer only


def batch_of_two(tiny_model, query, supports):
    """The square episode's features, twice over: a batch of two samples that are the same episode."""
    twice = lambda levels: [torch.cat([level, level]) for level in levels]
    prepared = [tiny_model._support_features(*pair) for pair in supports]
    return (twice(tiny_model.features(query)), [twice(f) for f, _ in prepared],
            [torch.cat([m, m]) for _, m in prepared])


def test_first_support_keeps_support_1_unless_the_others_keep_it_out(tiny_model, monkeypatch):
    """The rule of FusionHead.first_support, on admissions given: support 1 stays first while the others let it in
    at 0.5 or more on average; else the run starts from the support the others let in most."""
    head = tiny_model.head
    let_in = {}  # (judged, against) -> admission, per sample of a batch of two
    monkeypatch.setattr(head, "pair_admission", lambda judged, against: let_in[judged, against])
    passes = ["s1", "s2", "s3"]
    # sample 0: everything agrees; sample 1: supports 2 and 3 agree with each other and keep support 1 out
    for judged in passes:
        for against in passes:
            outvoted = "s1" in (judged, against)
            let_in[judged, against] = torch.tensor([0.9, 0.1 if outvoted else 0.95])
    let_in["s2", "s3"] = torch.tensor([0.9, 0.6])  # support 3 lets 2 in less than 2 lets 3 in
    torch.testing.assert_close(head.first_support(passes, {}), torch.tensor([0, 2]))
    let_in["s1", "s2"] = torch.tensor([0.9, 0.95])  # support 2 lets 1 in: (0.95 + 0.1) / 2 >= 0.5
    torch.testing.assert_close(head.first_support(passes, {}), torch.tensor([0, 0]))


def test_runs_that_start_again_in_a_batch_match_each_sample_run_alone(tiny_model, square_episode, monkeypatch):
    """With rejudge_first, each sample of a batch may start from another support (evaluation runs batches): the
    batch gives each sample what it would get alone, admissions and gates put back in the order given, and a gate
    forced open is that of the support named, wherever its run took it. Five supports: sample 1 starts again from
    support 3 when it arrives and goes on from there; sample 0 starts again from support 4, then back from 1."""
    (query, _), supports = square_episode
    supports = supports + supports[:2]
    head = tiny_model.head
    levels, features, masks = batch_of_two(tiny_model, query, supports)
    monkeypatch.setattr(head, "rejudge_first", True)
    monkeypatch.setattr(head, "discriminant", 0.5)  # its statistics are gathered per sample too
    firsts = {3: torch.tensor([0, 2]), 4: torch.tensor([3, 2]), 5: torch.tensor([0, 2])}
    rows = slice(0, 2)
    monkeypatch.setattr(head, "first_support", lambda passes, judged: firsts[len(passes)][rows])
    with torch.inference_mode():
        batch = head(levels, features, masks, trace=True, open_gate_at=(1,))
        alone = []
        for n in (0, 1):
            rows = slice(n, n + 1)
            alone.append(head([level[rows] for level in levels], [[level[rows] for level in f] for f in features],
                              [m[rows] for m in masks], trace=True, open_gate_at=(1,)))
    assert batch.order.tolist() == [[0, 1, 2, 3, 4], [2, 0, 1, 3, 4]]
    for n in (0, 1):
        assert alone[n].order.tolist() == batch.order[n:n + 1].tolist()
        for name in ("steps", "one_shots", "admissions"):
            for ours, theirs in zip(getattr(batch, name), getattr(alone[n], name)):
                torch.testing.assert_close(ours[n:n + 1], theirs)
        for ours, theirs in zip(batch.traces, alone[n].traces):
            for gate in ours:
                torch.testing.assert_close(ours[gate][n:n + 1], theirs[gate])
    # sample 1 took support 3 first (admission 1) and support 1 second, with its gate forced open there
    assert float(batch.admissions[2][1]) == float(batch.admissions[0][1]) == 1.0
    assert float(batch.traces[0]["input_gate"][1].min()) == 1.0
    # sample 0's step 4 came from a run that started from support 4; its step 5 from support 1 again, as given
    monkeypatch.setattr(head, "rejudge_first", False)
    with torch.inference_mode():
        as_given = head(levels, features, masks, open_gate_at=(1,))
    assert not torch.allclose(batch.steps[3][:1], as_given.steps[3][:1])
    torch.testing.assert_close(batch.steps[4][:1], as_given.steps[4][:1])


def test_rejudging_the_first_support_is_saved_and_off_for_older_configs(tmp_path, tiny_model):
    with configured(tiny_model, rejudge_first=True):
        assert tiny_model.head.rejudge_first
        tiny_model.save_pretrained(tmp_path)
    assert not tiny_model.head.rejudge_first
    assert_saved_and_off_when_absent(tmp_path, "rejudge_first", True, off=False)
