"""Trainers: the ``[training]`` section and the integrators behind it.

The contract every integrator follows:

* a small frozen record in ``INTEGRATORS`` (name, integer code, declared strong and weak order as a
  discretisation of gradient flow in time t = step * eta, whether it is stochastic);
* compiled per-replica step functions, one per kind of model, that share the trainer's arrays and
  its Philox sample draws: for the simple network ``discrete.single_sample_step`` / ``batch_step``
  (one output) and ``discrete_step_outputs`` (M outputs), for the deep MLP ``deep.deep_discrete_step``,
  and the SDE schemes in ``sde.py``; each returns False when the loss gradient was not finite;
* ``TrainerSpec.kernel_arrays()`` packs the validated options into the plain arrays the steps take
  (a new option's position is appended, ``TF_CLIP_NORM``, so that the earlier ones keep theirs).

An option that only some steps implement (``clip_norm``: the deep MLP's discrete step) is refused by
``check()`` for every kind whose ``[training]`` section does not declare it (``CLIPS``), rather than
silently ignored by the steps that do not read it.

A new trainer is therefore one entry in ``INTEGRATORS``, a step for each kind of model it should
train, the choice of that step where the kind's advance kernel is picked (``engine.cpu.advance_kernel``
for the simple network, ``engine.cpu.advance_deep`` for the MLP) and, for the simple network on a
GPU, its device variant in ``engine/cuda.py``. Kernels stay per model on purpose: passing the step
into a generic kernel as a function argument would cost Numba's cache and compile time.

The continuous-time trainer ``sde`` (see ``sde.py``) integrates

    d theta = -(grad L + lambda theta) dt + B(theta) dW

with a choice of noise B (``NOISES``) and of scheme (``SCHEMES``); each scheme declares its strong
and weak orders, which depend on whether the noise is additive (B constant) or multiplicative.
"""
import dataclasses
import math

import numpy as np

from ..losses import LOSSES, MULTICLASS_LOSSES
from ..spec import Section, option

# Positions in the packed ``trainer_ints`` / ``trainer_floats`` arrays.
TI_METHOD, TI_BATCH, TI_SAMPLING, TI_LOSS, TI_NOISE, TI_SCHEME, TI_N_XI = range(7)
TF_ETA, TF_TEMPERATURE, TF_WEIGHT_DECAY, TF_NOISE_STD, TF_DT, TF_SQRT_DT, TF_NOISE_COEF = range(7)
# Appended, not inserted: every earlier position keeps its meaning in every kernel that reads the array.
TF_CLIP_NORM = 7

SAMPLING = {"full": 0, "with_replacement": 1, "without_replacement": 2}


@dataclasses.dataclass(frozen=True)
class Integrator:
    name: str
    code: int
    strong_order: float
    weak_order: float
    stochastic: bool
    description: str


INTEGRATORS = {
    "gd": Integrator("gd", 0, 1.0, 1.0, False,
                     "full-batch gradient descent: theta <- theta - eta grad L (explicit Euler of gradient flow)"),
    "sgd": Integrator("sgd", 1, 0.5, 1.0, True,
                      "mini-batch SGD: theta <- theta - eta grad L_batch, batch of B samples per replica"),
    "langevin": Integrator("langevin", 2, 0.5, 1.0, True,
                           "GD or SGD plus sqrt(2 eta T) xi, xi ~ N(0, I): Euler-Maruyama of Langevin dynamics"),
    # orders of the sde entry are those of its scheme and noise, see TrainerSpec.integrator
    "sde": Integrator("sde", 3, math.nan, math.nan, True,
                      "continuous-time gradient flow with noise, d theta = -grad L dt + B(theta) dW"),
}
SDE_CODE = INTEGRATORS["sde"].code


@dataclasses.dataclass(frozen=True)
class Noise:
    name: str
    code: int
    additive: bool
    description: str


NOISES = {
    "none": Noise("none", 0, True, "B = 0: deterministic gradient flow"),
    "sgd": Noise("sgd", 1, False,
                 "B B^T = (eta / B) Sigma(theta), Sigma the covariance of per-sample gradients over the training "
                 "set; it vanishes where every sample's gradient does (the loss-feedback loop of SGD)"),
    "langevin": Noise("langevin", 2, True, "B = sqrt(2 T) I: additive noise at temperature T"),
    "loss_scaled": Noise("loss_scaled", 3, False,
                         "B = sqrt(2 T L(theta)) I: isotropic noise whose variance is proportional to the loss"),
}


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A time-stepping scheme; orders as (strong, weak), for additive and multiplicative noise."""
    name: str
    code: int
    stages: int
    additive_orders: tuple[float, float]
    multiplicative_orders: tuple[float, float] | None  # None: the scheme is not valid for it
    deterministic_order: float
    description: str


SCHEMES = {
    "euler_maruyama": Scheme("euler_maruyama", 0, 1, (1.0, 1.0), (0.5, 1.0), 1.0,
                             "theta += a dt + B dW; one gradient per step"),
    # Heun's predictor-corrector converges to the Stratonovich solution when B depends on theta,
    # so it is offered for additive noise only (where Ito and Stratonovich agree).
    "heun": Scheme("heun", 1, 2, (1.0, 2.0), None, 2.0,
                   "stochastic Heun: predictor theta* = theta + a dt + B dW, corrector "
                   "theta += (a(theta) + a(theta*)) dt / 2 + B dW; two gradients per step"),
    "rk4": Scheme("rk4", 2, 4, (math.nan, math.nan), None, 4.0,
                  "classical Runge-Kutta for noise = 'none' (gradient flow, the eta -> 0 limit); four gradients per step"),
}


@dataclasses.dataclass(frozen=True)
class TrainerSpec(Section):
    SECTION = "training"
    method: str = option("sgd", "str", "integrator", choices=tuple(INTEGRATORS))
    eta: float = option(0.05, "float", "learning rate (time step)", minimum=0.0, exclusive_minimum=True)
    batch_size: int = option(None, "int", "samples per step (sgd: default 1; langevin: default all = GD + noise; "
                                          "gd: always all)", minimum=1, optional=True)
    sampling: str = option("with_replacement", "str",
                           "how sgd batches are drawn: independently per sample, or by epoch-wise shuffling",
                           choices=("with_replacement", "without_replacement"))
    temperature: float = option(0.0, "float", "Langevin temperature T (noise sqrt(2 eta T) per step)", minimum=0.0)
    loss: str = option("squared", "str", "per-sample loss (softmax_cross_entropy: K-class outputs of the mlp model)",
                       choices=tuple(LOSSES) + tuple(MULTICLASS_LOSSES))
    weight_decay: float = option(0.0, "float", "L2 coefficient lambda: the update adds -eta lambda theta",
                                 minimum=0.0)
    noise: str = option("sgd", "str", "sde only: the noise B(theta) dW (see NOISES)", choices=tuple(NOISES))
    scheme: str = option("euler_maruyama", "str", "sde only: the integration scheme", choices=tuple(SCHEMES))
    dt: float = option(None, "float", "sde only: integration time step (default: eta, so that step k of SGD "
                                      "and step k of the SDE are at the same time t = k eta)",
                       minimum=0.0, exclusive_minimum=True, optional=True)
    # None (omitted from the config's text) when off, so that configs without the key keep their digests;
    # 0 is read as off too (check() turns it into None), so that it has the same digest as no key.
    clip_norm: float = option(None, "float", "clip the loss gradient of each step to this global L2 norm: "
                                             "g <- g min(1, clip_norm / |g|), before weight decay and noise "
                                             "(default, or 0: off; the mlp kind's gd, sgd and langevin only)",
                              minimum=0.0, optional=True)

    #: whether the kind whose [training] this is clips (its step implements TF_CLIP_NORM); only the deep
    #: MLP's discrete step does, so every other kind refuses clip_norm instead of silently ignoring it
    CLIPS = False
    CLIP_SUPPORT = "gradient clipping is implemented for the deep MLP only (model.kind = 'mlp', method 'gd', " \
                   "'sgd' or 'langevin')"

    @property
    def integrator(self) -> Integrator:
        if self.method != "sde":
            return INTEGRATORS[self.method]
        scheme, noise = SCHEMES[self.scheme], NOISES[self.noise]
        if noise.name == "none":
            strong = weak = scheme.deterministic_order
        else:
            strong, weak = scheme.additive_orders if noise.additive else scheme.multiplicative_orders
        return Integrator("sde", INTEGRATORS["sde"].code, strong, weak, noise.name != "none",
                          f"{scheme.name} ({scheme.description}) for d theta = -grad L dt + B dW, "
                          f"noise '{noise.name}': {noise.description}")

    @property
    def time_step(self) -> float:
        """Continuous time per step: t = step * time_step."""
        if self.method == "sde" and self.dt is not None:
            return self.dt
        return self.eta

    def check(self):
        if self.clip_norm == 0.0:
            object.__setattr__(self, "clip_norm", None)
        if self.clip_norm is not None and not self.CLIPS:
            self.fail("clip_norm", f"got {self.clip_norm}; {self.CLIP_SUPPORT}: the trainers of this model.kind "
                                   "do not clip, remove it")
        if self.clip_norm is not None and self.method == "sde":
            self.fail("clip_norm", f"got {self.clip_norm} with method = 'sde'; {self.CLIP_SUPPORT}: remove it, "
                                   "or use a discrete trainer")
        if self.method == "gd" and self.batch_size is not None:
            self.fail("batch_size", f"got {self.batch_size}; gd always uses the whole training set: "
                                    "remove batch_size or use method = 'sgd'")
        if self.method == "sde":
            self._check_sde()
            return
        for name in ("noise", "scheme", "dt"):
            default = type(self).__dataclass_fields__[name].default
            if getattr(self, name) != default:
                self.fail(name, f"got {getattr(self, name)!r}; only method = 'sde' uses it: remove it or set "
                                "method = 'sde'")
        if self.method == "langevin" and self.temperature <= 0.0:
            self.fail("temperature", f"got {self.temperature}; langevin needs temperature > 0")
        if self.method != "langevin" and self.temperature != 0.0:
            self.fail("temperature", f"got {self.temperature}; only method = 'langevin' uses a temperature")

    def _check_sde(self):
        noise, scheme = NOISES[self.noise], SCHEMES[self.scheme]
        uses_temperature = self.noise in ("langevin", "loss_scaled")
        if uses_temperature and self.temperature <= 0.0:
            self.fail("temperature", f"got {self.temperature}; noise = '{self.noise}' needs temperature > 0")
        if not uses_temperature and self.temperature != 0.0:
            self.fail("temperature", f"got {self.temperature}; noise = '{self.noise}' has no temperature: "
                                     "remove it, or use noise = 'langevin' or 'loss_scaled'")
        if self.batch_size is not None and self.noise != "sgd":
            self.fail("batch_size", f"got {self.batch_size}; only noise = 'sgd' has a batch size (the SDE drift "
                                    "is always the full-batch gradient)")
        if self.sampling != "with_replacement":
            self.fail("sampling", f"got {self.sampling!r}; the sde trainer draws no batches: remove it")
        if scheme.name == "rk4" and noise.name != "none":
            self.fail("scheme", f"got 'rk4' with noise = '{noise.name}'; rk4 integrates deterministic gradient "
                                "flow only: set noise = 'none', or use scheme 'heun' or 'euler_maruyama'")
        if scheme.multiplicative_orders is None and not noise.additive:
            self.fail("scheme", f"got '{scheme.name}' with noise = '{noise.name}', whose amplitude depends on theta; "
                                f"'{scheme.name}' would converge to the Stratonovich SDE, not the Ito one: "
                                "use scheme = 'euler_maruyama'")

    def effective_batch(self, n_train: int) -> int:
        """Samples per gradient: the batch B of SGD (and of the SDE's SGD noise), else n_train."""
        if self.method == "gd" or (self.method == "langevin" and self.batch_size is None):
            return n_train
        if self.method == "sde" and self.noise != "sgd":
            return n_train
        return 1 if self.batch_size is None else self.batch_size

    def resolved(self, n_train: int) -> "TrainerSpec":
        """The section with its derived values filled in, for a training set of n_train samples: the
        batch size a run uses (None where there is none) and the sde trainer's dt."""
        if self.method == "sde":
            batch = self.effective_batch(n_train) if self.noise == "sgd" else None
            return dataclasses.replace(self, batch_size=batch, dt=self.time_step)
        if self.method != "gd":
            return dataclasses.replace(self, batch_size=self.effective_batch(n_train))
        return self

    def noise_draws(self, n_train: int, n_params: int) -> int:
        """Standard normals per sde step: one per sample (SGD noise, through the factor G) or per parameter."""
        if self.method != "sde" or self.noise == "none":
            return 0
        return n_train if self.noise == "sgd" else n_params

    def kernel_arrays(self, n_train: int, n_params: int = 0) -> tuple[np.ndarray, np.ndarray]:
        batch = self.effective_batch(n_train)
        sampling = SAMPLING["full"] if batch == n_train and (self.method != "sgd") else SAMPLING[self.sampling]
        if self.method == "sde":
            sampling = SAMPLING["full"]
        loss_code = LOSSES[self.loss] if self.loss in LOSSES else MULTICLASS_LOSSES[self.loss]
        ints = np.array([self.integrator.code, batch, sampling, loss_code, NOISES[self.noise].code,
                         SCHEMES[self.scheme].code, self.noise_draws(n_train, n_params)], dtype=np.int64)
        dt = self.time_step
        if self.noise == "sgd":  # G xi with G = centred per-sample gradients / sqrt(P)
            noise_coef = math.sqrt(self.eta / (batch * n_train))
        else:
            noise_coef = math.sqrt(2.0 * self.temperature)
        floats = np.array([self.eta, self.temperature, self.weight_decay,
                           math.sqrt(2.0 * self.eta * self.temperature), dt, math.sqrt(dt), noise_coef,
                           self.clip_norm or 0.0], dtype=np.float64)
        return ints, floats

    def attributes(self, n_train: int) -> dict:
        integ = self.integrator
        out = dict(method=self.method, eta=self.eta, batch_size=self.effective_batch(n_train),
                   sampling=self.sampling if self.method == "sgd" or self.method == "langevin" else "full",
                   temperature=self.temperature, loss=self.loss, weight_decay=self.weight_decay,
                   strong_order=integ.strong_order, weak_order=integ.weak_order, description=integ.description,
                   time_step=self.time_step, time_unit="t = step * time_step")
        if self.method == "sde":
            out.update(noise=self.noise, scheme=self.scheme, dt=self.time_step)
        if self.clip_norm is not None:  # only when set: the attributes of a run without it stay as they were
            out.update(clip_norm=self.clip_norm)
        return out
