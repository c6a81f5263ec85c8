"""Trainers: the ``[training]`` section and the integrators behind it.

The contract every integrator follows:

* a small frozen record in ``INTEGRATORS`` (name, integer code, declared strong and weak order as a
  discretisation of gradient flow in time t = step * eta, whether it is stochastic);
* one compiled per-replica ``step`` function (see ``discrete.py``) with the fixed signature
  ``step(theta, x, y, model_ints, model_floats, trainer_ints, trainer_floats, seed, replica, step,
  workspace...) -> bool`` (False when the loss gradient was not finite), which the engine calls;
* ``TrainerSpec.kernel_arrays()`` packs the validated options into the plain arrays the step takes.

A new trainer is one registry entry plus one compiled step, dispatched by code in the engine.
"""
import dataclasses
import math

import numpy as np

from ..losses import LOSSES
from ..spec import Section, option

# Positions in the packed ``trainer_ints`` / ``trainer_floats`` arrays.
TI_METHOD, TI_BATCH, TI_SAMPLING, TI_LOSS = range(4)
TF_ETA, TF_TEMPERATURE, TF_WEIGHT_DECAY, TF_NOISE_STD = range(4)

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
    loss: str = option("squared", "str", "per-sample loss", choices=tuple(LOSSES))
    weight_decay: float = option(0.0, "float", "L2 coefficient lambda: the update adds -eta lambda theta",
                                 minimum=0.0)

    @property
    def integrator(self) -> Integrator:
        return INTEGRATORS[self.method]

    def check(self):
        if self.method == "gd" and self.batch_size is not None:
            self.fail("batch_size", f"got {self.batch_size}; gd always uses the whole training set: "
                                    "remove batch_size or use method = 'sgd'")
        if self.method == "langevin" and self.temperature <= 0.0:
            self.fail("temperature", f"got {self.temperature}; langevin needs temperature > 0")
        if self.method != "langevin" and self.temperature != 0.0:
            self.fail("temperature", f"got {self.temperature}; only method = 'langevin' uses a temperature")

    def effective_batch(self, n_train: int) -> int:
        if self.method == "gd" or (self.method == "langevin" and self.batch_size is None):
            return n_train
        return 1 if self.batch_size is None else self.batch_size

    def kernel_arrays(self, n_train: int) -> tuple[np.ndarray, np.ndarray]:
        batch = self.effective_batch(n_train)
        sampling = SAMPLING["full"] if batch == n_train and (self.method != "sgd") else SAMPLING[self.sampling]
        ints = np.array([self.integrator.code, batch, sampling, LOSSES[self.loss]], dtype=np.int64)
        floats = np.array([self.eta, self.temperature, self.weight_decay,
                           math.sqrt(2.0 * self.eta * self.temperature)], dtype=np.float64)
        return ints, floats

    def attributes(self, n_train: int) -> dict:
        integ = self.integrator
        return dict(method=self.method, eta=self.eta, batch_size=self.effective_batch(n_train),
                    sampling=self.sampling if self.method != "gd" else "full", temperature=self.temperature,
                    loss=self.loss, weight_decay=self.weight_decay, strong_order=integ.strong_order,
                    weak_order=integ.weak_order, description=integ.description, time_unit="t = step * eta")
