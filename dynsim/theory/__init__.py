"""Theory of the simple network in SymPy: gradients, NTK, one-step response, kernels at
initialisation, lazy training, and the analytic statements on the response; compiled to Numba
through one code generator, and checked against the simulator.

    from dynsim.theory import derive, empirical_ntk, init_kernels, compare_lazy
    print(derive("ntk", "relu").latex())

Modules: ``symbolic`` (activations and losses, defined once), ``codegen`` (SymPy -> njit/ufunc),
``network`` (per-unit derivations and their numeric evaluation), ``kernels`` (expectations at
initialisation), ``lazy`` (linearised training; theory against a run file), ``statements``, ``aging`` (late-time
asymptotics of a saturating output),
``chain`` (the max-norm chain of the wormhole paper: exact gain per layer, collapse of the output
directions, the maximum-likelihood reading of the selection),
``derivations`` (the printable derivations, ``derive``), ``cli`` (``dynsim derive``). See docs/theory.md.

The names below are loaded on first use, so that ``dynsim`` commands that do not derive anything
do not pay for importing SymPy.
"""
import importlib

QUANTITIES = ("gradients", "ntk", "response", "kernel_init", "lazy", "statements", "aging", "selection_mle",
              "response_law")
# the quantities that do not depend on the simple network's hidden activation
ACTIVATION_FREE_QUANTITIES = ("aging", "selection_mle", "response_law")

_EXPORTS = {
    "symbolic": ("ACTIVATION_EXPRESSIONS", "LOSS_EXPRESSIONS", "activation", "loss"),
    "codegen": ("GeneratedFunction", "generate"),
    "network": ("Architecture", "UnitDerivation", "derive_unit", "derive_generic_unit", "compiled_activation",
                "compiled_unit", "network_outputs", "parameter_gradient", "empirical_ntk", "loss_derivative",
                "response_expansion"),
    "kernels": ("GaussianKernels", "InitKernels", "gaussian_kernels", "gaussian_expectations",
                "gauss_hermite_expectations", "init_kernels", "pre_activation_covariances"),
    "lazy": ("LazyPrediction", "LazyComparison", "mode_filters", "lazy_gd", "lazy_gradient_flow", "compare_lazy"),
    "statements": ("Statement", "AmplitudeLaw", "second_order_parity", "response_factorisation", "amplitude_law",
                   "sgd_moment_equations", "sgd_lazy_moments", "all_statements"),
    "aging": ("AgingLaw", "QuantityAsymptotics", "aging_law"),
    "chain": ("SELECTIONS", "SelectionMLE", "expected_squared_gain", "asymptotic_squared_gain", "collapse_factor",
              "perpendicular_to_parallel_ratios", "selection_likelihood"),
    "derivations": ("Derivation", "derive"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["QUANTITIES", "ACTIVATION_FREE_QUANTITIES", *_WHERE]


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
