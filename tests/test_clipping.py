"""Gradient clipping (``[training] clip_norm``, issue 21 item 2): the deep MLP's clipped step against an
independent NumPy recomputation, bit-identity where clipping does not bite or is off, and the refusal
of every kind and method whose step does not clip.

The NumPy reference is ``test_deep.numpy_loss_and_grad`` (matrix-form backprop, itself checked there
against central finite differences); the SGD batch indices are redrawn here from the shared Philox
stream (``dynsim.rng.index_at``), the one primitive the reference shares with the kernel.
"""
import dataclasses

import numpy as np
import pytest

from conftest import SEED
from dynsim.config import dump_toml, results_digest
from dynsim.integrators import TF_CLIP_NORM, TrainerSpec
from dynsim.integrators.deep import clip_gradient
from dynsim.kinds import make_runner, parse_config
from dynsim.rng import STREAM_BATCH, index_at
from dynsim.spec import ConfigError
from dynsim.store import RunReader
from test_deep import numpy_loss_and_grad

ETA, BATCH = 0.2, 4


def _config(training=None, steps=1, **run):
    tables = dict(run=dict(seed=SEED, replicas=3, steps=steps, **run),
                  model=dict(kind="mlp", input_dim=3, depth=3, width=6, activation="relu", bias_std=0.2),
                  task=dict(kind="gaussian_mixture", classes=3, n_train=12, n_test=10),
                  training=dict(method="sgd", eta=ETA, batch_size=BATCH, **(training or {})),
                  record=dict(n_records=2, basin_samples=2, noise_inputs=6,
                              observables=["loss_train", "loss_test", "accuracy_train", "accuracy_test", "param_norm"]))
    return parse_config(dump_toml(tables))


def _numpy_sgd_step(sim, theta0, weight_decay=0.0):
    """Per replica: the batch gradient of step 0 (NumPy backprop on the Philox-drawn batch) and its norm."""
    x, labels = sim.data.x_train, sim.labels_train
    grads = []
    for r, theta in enumerate(theta0):
        batch = [index_at(np.uint64(SEED), np.uint64(r), np.uint64(STREAM_BATCH), np.uint64(0), np.uint64(b),
                          np.uint64(x.shape[0])) for b in range(BATCH)]
        grads.append(numpy_loss_and_grad(sim.arch, theta, x[batch], labels[batch])[1])
    grads = np.array(grads)
    return grads, np.linalg.norm(grads, axis=1)


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_clipped_sgd_step_matches_numpy(tmp_path, weight_decay):
    plain = make_runner(_config(dict(weight_decay=weight_decay)))
    theta0 = plain.initial_params()
    grads, norms = _numpy_sgd_step(plain, theta0)
    # a bound between the replicas' gradient norms: at least one replica is clipped, at least one is not
    clip = float(np.median(norms))
    assert norms.min() < clip < norms.max()
    sim = make_runner(_config(dict(weight_decay=weight_decay, clip_norm=clip)))
    clipped = sim.run(tmp_path / "clip.h5", progress=False).params
    unclipped = plain.run(tmp_path / "plain.h5", progress=False).params
    decay = 1.0 - ETA * weight_decay
    for r in range(theta0.shape[0]):
        scale = min(1.0, clip / norms[r])
        expected = decay * theta0[r] - ETA * scale * grads[r]  # weight decay is not clipped
        # the same float64 sums in another order (matrix vs per-sample backprop): ~1e-15 relative per
        # operation, over a few hundred terms
        np.testing.assert_allclose(clipped[r], expected, rtol=1e-11, atol=1e-13)
        step = clipped[r] - decay * theta0[r]
        if norms[r] > clip:
            # the loss-gradient step is exactly eta * clip_norm long: the rescaled g has norm clip up to
            # the rounding of one sum of squares and one multiply per entry (~1e-16 relative), plus the
            # cancellation in theta1 - decay theta0 (|theta| / |step| ~ 10 times that)
            assert np.linalg.norm(step) == pytest.approx(ETA * clip, rel=1e-12)
        else:
            # below the bound the step is the unclipped one, bit for bit
            np.testing.assert_array_equal(clipped[r], unclipped[r])


def test_clip_gradient_kernel():
    rng = np.random.default_rng(SEED)
    g = rng.standard_normal(50)
    norm = float(np.linalg.norm(g))
    above = g.copy()
    assert clip_gradient(above, 0.5 * norm) == pytest.approx(norm, rel=1e-14)
    assert np.linalg.norm(above) == pytest.approx(0.5 * norm, rel=1e-14)
    np.testing.assert_allclose(above, 0.5 * g, rtol=1e-14)  # same direction
    for bound in (norm, 2.0 * norm):  # at or above the norm: not touched at all
        same = g.copy()
        clip_gradient(same, bound)
        np.testing.assert_array_equal(same, g)


def test_clipping_that_never_bites_and_clip_norm_zero_are_bit_identical(tmp_path):
    files = {}
    for name, training in (("none", {}), ("zero", dict(clip_norm=0.0)), ("huge", dict(clip_norm=1e6))):
        config = _config(dict(training), steps=40, on_divergence="freeze")
        files[name] = tmp_path / f"{name}.h5"
        assert make_runner(config).run(files[name], progress=False).ok
    # clip_norm = 0 is off: the same config text, digest and kernel arrays as no key at all
    none, zero = _config(), _config(dict(clip_norm=0.0))
    assert zero.training.clip_norm is None and "clip_norm" not in zero.to_toml()
    assert zero.digest() == none.digest() and results_digest(zero) == results_digest(none)
    with RunReader(files["none"]) as a:
        reference = {n: a.observable(n) for n in a.observable_names}, a.dataset("params/final"), dict(a.training_attrs)
    assert "clip_norm" not in reference[2]
    for name in ("zero", "huge"):
        with RunReader(files[name]) as b:
            assert set(b.observable_names) == set(reference[0])
            for key, values in reference[0].items():
                np.testing.assert_array_equal(b.observable(key), values, err_msg=f"{name}: {key}")
            np.testing.assert_array_equal(b.dataset("params/final"), reference[1])
            assert b.training_attrs.get("clip_norm") == (1e6 if name == "huge" else None)


def test_clip_norm_is_appended_to_the_trainer_floats():
    floats = TrainerSpec(method="sgd", eta=0.1).kernel_arrays(10)[1]
    assert TF_CLIP_NORM == floats.size - 1 and floats[TF_CLIP_NORM] == 0.0
    deep = _config(dict(clip_norm=1.5)).training.kernel_arrays(12)[1]
    # every earlier position is the one it was before the option existed
    before = TrainerSpec(method="sgd", eta=ETA, batch_size=BATCH, loss="softmax_cross_entropy").kernel_arrays(12)[1]
    np.testing.assert_array_equal(deep[:TF_CLIP_NORM], before[:TF_CLIP_NORM])
    assert deep[TF_CLIP_NORM] == 1.5


@pytest.mark.parametrize("text", [
    "[training]\nmethod = 'sgd'\nclip_norm = 1.0",                                    # the simple network
    "[model]\nkind = 'response_law'\n[training]\nclip_norm = 1.0",                    # the response law
    "[model]\nkind = 'mlp'\n[training]\nmethod = 'sde'\nclip_norm = 1.0",            # the mlp's sde trainer
])
def test_clip_norm_is_refused_where_no_step_clips(text):
    with pytest.raises(ConfigError, match="model.kind = 'mlp'") as info:
        parse_config(text)
    assert info.value.field == "training.clip_norm"


def test_clip_norm_validation():
    with pytest.raises(ConfigError) as info:
        _config(dict(clip_norm=-1.0))
    assert info.value.field == "training.clip_norm"
    # every discrete trainer of the mlp takes it
    for training in (dict(clip_norm=1.0), dict(method="langevin", temperature=0.01, clip_norm=1.0)):
        tables = dict(model=dict(kind="mlp"), training=training)
        assert parse_config(dump_toml(tables)).training.clip_norm == 1.0
    gd = parse_config(dump_toml(dict(model=dict(kind="mlp"), training=dict(method="gd", clip_norm=2.0))))
    assert dataclasses.replace(gd.training, eta=0.1).clip_norm == 2.0
    # the chain kind trains nothing and has no [training] table at all
    with pytest.raises(ConfigError) as info:
        parse_config("[model]\nkind = 'maxnorm_chain'\n[training]\nclip_norm = 1.0")
    assert info.value.field == "training"
