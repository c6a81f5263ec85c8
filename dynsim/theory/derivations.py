"""``derive(quantity, activation, ...)``: one derivation as equations, LaTeX, SymPy text and code.

This is what ``dynsim derive`` prints and what scripts import:

    from dynsim.theory import derive
    d = derive("ntk", "relu")
    d.equations          # SymPy Eq objects to manipulate
    print(d.latex())     # to paste
    d.generated[0](u, v, a, dot, s)   # compiled, broadcasting over NumPy arrays

Quantities: gradients, ntk, response (to eta^2), kernel_init (expectation at initialisation, the
infinite-width NTK for "ntk" scaling), lazy (linearised GD / gradient flow), statements (the
analytic statements of ``statements.py``), aging (late-time exponents and first corrections of a
saturating sigmoid output under squared error and cross-entropy, ``aging.py``), selection_mle
(the maximum-likelihood reading of the max-norm chain of the wormhole paper, ``chain.py``),
response_law (the response-law model's solutions for one and two samples, ``response_law.py``).
"""
import dataclasses

import sympy

from . import QUANTITIES
from . import symbolic as sym
from .aging import LOSSES as AGING_LOSSES
from .aging import aging_law
from .chain import selection_likelihood
from .codegen import GeneratedFunction
from .kernels import closed_form_functions, gaussian_kernels, init_ntk_expression, sigma_a, sigma_b, sigma_w
from .lazy import compiled_mode_filters, matrix_equations, mode_filters
from .network import (A_DISPLAY, B_DISPLAY, D_sym, U_DISPLAY, W_DISPLAY, Architecture, compiled_activation,
                      compiled_unit, d_index, derive_unit, display_inputs, j_index, pre_activation_definitions,
                      sum_over_units)
from .response_law import solutions as response_law_solutions
from .statements import all_statements


@dataclasses.dataclass(frozen=True)
class Derivation:
    quantity: str
    architecture: Architecture | None  # None: the derivation does not depend on the network
    title: str
    equations: tuple[sympy.Eq, ...]
    definitions: tuple[sympy.Eq, ...] = ()
    generated: tuple[GeneratedFunction, ...] = ()
    notes: tuple[str, ...] = ()

    def latex(self) -> str:
        lines = [f"% {self.title}"] + [f"% {note}" for note in self.notes]
        lines += [sympy.latex(eq) for eq in self.equations]
        if self.definitions:
            lines.append("% where")
            lines += [sympy.latex(eq) for eq in self.definitions]
        return "\n".join(lines)

    def sympy_text(self) -> str:
        lines = [f"# {self.title}"] + [f"# {note}" for note in self.notes]
        lines += [sympy.sstr(eq) for eq in self.equations]
        if self.definitions:
            lines.append("# where")
            lines += [sympy.sstr(eq) for eq in self.definitions]
        return "\n".join(lines)

    def python(self) -> str:
        """The generated modules (what is compiled), one after the other."""
        if not self.generated:
            return f"# {self.title}: nothing is compiled for this quantity"
        return "\n\n".join(f"# ---- {g.path}\n{g.source}" for g in self.generated)


def _lhs(name: str, *args) -> sympy.Expr:
    return sympy.Function(name)(*args)


def _gradients(arch: Architecture) -> Derivation:
    unit = derive_unit(arch)
    x, _ = display_inputs()
    f = _lhs("f", sympy.Symbol("x"))
    at_unit = {sym.u: U_DISPLAY[j_index], sym.a: A_DISPLAY[j_index], sym.s: arch.scale}
    equations = [sympy.Eq(sympy.Derivative(f, W_DISPLAY[j_index, d_index]), unit.grad_u.subs(at_unit) * x[d_index])]
    if arch.hidden_bias:
        equations.append(sympy.Eq(sympy.Derivative(f, B_DISPLAY[j_index]), unit.grad_u.subs(at_unit)))
    equations.append(sympy.Eq(sympy.Derivative(f, A_DISPLAY[j_index]), unit.grad_a.subs(at_unit)))
    if arch.output_bias:
        equations.append(sympy.Eq(sympy.Derivative(f, sympy.Symbol("c")), 1))
    fns = compiled_unit(arch)
    return Derivation("gradients", arch, f"parameter gradients of the simple network ({_describe(arch)})",
                      tuple(equations), (sympy.Eq(*pre_activation_definitions(arch)[0]),),
                      (fns["grad_u"], fns["grad_a"]))


def _ntk(arch: Architecture) -> Derivation:
    unit = derive_unit(arch)
    x, xp = sympy.symbols("x x'")
    rhs = sum_over_units(unit.ntk, arch) + unit.output_bias_ntk
    return Derivation("ntk", arch, f"empirical NTK Theta(x, x') = grad f(x) . grad f(x') ({_describe(arch)})",
                      (sympy.Eq(_lhs("Theta", x, xp), rhs),),
                      tuple(sympy.Eq(*pair) for pair in pre_activation_definitions(arch)),
                      (compiled_unit(arch)["ntk"],),
                      ("per-unit summand compiled as ntk_unit(u, v, a, dot, s) with dot = x.x'",))


def _response(arch: Architecture) -> Derivation:
    unit = derive_unit(arch)
    x, xs = sympy.symbols("x x_s")
    l_s = sympy.Symbol("l'_s")
    shown = {sym.g: l_s}
    first = sum_over_units(unit.response_first.subs(shown), arch, "x_s") + unit.output_bias_first.subs(shown)
    second = sum_over_units(unit.response_second.subs(shown), arch, "x_s")
    R1, R2 = sympy.symbols("R_1 R_2")
    fns = compiled_unit(arch)
    return Derivation(
        "response", arch,
        f"one-step training response to second order in eta ({_describe(arch)})",
        (sympy.Eq(_lhs("R", x, xs), sym.eta * R1 + sym.eta ** 2 * R2 + sympy.O(sym.eta ** 3)),
         sympy.Eq(R1, first), sympy.Eq(R2, second)),
        tuple(sympy.Eq(*pair) for pair in pre_activation_definitions(arch, "x_s"))
        + (sympy.Eq(l_s, sympy.Function("l'")(sympy.Function("f")(xs), sympy.Symbol("y_s"))),),
        (fns["response_first"], fns["response_second"]),
        ("the step is Delta theta = -eta l'_s grad f(x_s) on the source alone (dynsim's response)",
         "R_1 = -l'_s Theta(x, x_s); R_2 is the explicit eta^2 correction",
         "per-unit terms compiled as response{1,2}_unit(u, v, a, dot, s, g) with g = l'_s"))


def _kernel_init(arch: Architecture) -> Derivation:
    k = gaussian_kernels(arch.activation)
    x, xp = sympy.symbols("x x'")
    K, Kdot = sympy.Function("K"), sympy.Function("Kdot")
    q, q_p, c = sym.q, sym.q_p, sym.c
    xs, xps = display_inputs()

    def inner(left, right):
        return sympy.Sum(left[d_index] * right[d_index], (d_index, 1, D_sym))
    bias = sigma_b ** 2 if arch.hidden_bias else 0
    definitions = [sympy.Eq(q, sigma_w ** 2 * inner(xs, xs) / D_sym + bias),
                   sympy.Eq(q_p, sigma_w ** 2 * inner(xps, xps) / D_sym + bias),
                   sympy.Eq(c, sigma_w ** 2 * inner(xs, xps) / D_sym + bias)]
    definitions += [sympy.Eq(name, value) for name, value in k.definitions]
    shown_ntk = init_ntk_expression(arch).subs({k.explicit(k.derivative): Kdot(q, q_p, c),
                                                 k.explicit(k.value): K(q, q_p, c), sym.dot: inner(xs, xps)})
    equations = (sympy.Eq(_lhs("Theta_init", x, xp), shown_ntk),
                 sympy.Eq(K(q, q_p, c), k.value), sympy.Eq(Kdot(q, q_p, c), k.derivative),
                 sympy.Eq(_lhs("Sigma_init", x, xp), sigma_a ** 2 * K(q, q_p, c)))
    if k.closed_form:
        generated = closed_form_functions(arch.activation)
        how = "closed form; compiled in (q, q_p, rho) with rho = c / sqrt(q q_p)"
    else:
        generated = (compiled_activation(arch.activation, 0), compiled_activation(arch.activation, 1))
        how = "no closed form: 2-D Gauss-Hermite quadrature of the compiled sigma and sigma'"
    scaling_note = ("with ntk scaling this is the infinite-width NTK (the empirical one fluctuates by O(N^-1/2))"
                    if arch.scaling == "ntk" else "with standard scaling E Theta grows like N: no finite limit")
    return Derivation("kernel_init", arch,
                      f"kernels at initialisation, expectation over w, b, a ({_describe(arch)})",
                      equations, tuple(definitions), tuple(generated),
                      (scaling_note, f"K, Kdot: {how}", "Sigma_init(x, x') = E f(x) f(x') (NNGP kernel)"))


def _lazy(arch: Architecture) -> Derivation:
    filters = mode_filters()
    lam = sympy.Symbol("lam", positive=True)
    names = {"gd_residual": "r_t", "gd_probe": "g_t", "flow_residual": "r_tau", "flow_probe": "g_tau"}
    per_mode = tuple(sympy.Eq(sympy.Symbol(names[key]), value) for key, value in filters.items())
    return Derivation("lazy", arch, "lazy (linearised) training under squared loss: discrete GD and gradient flow",
                      matrix_equations() + per_mode, (), tuple(compiled_mode_filters().values()),
                      ("per eigenmode (eigenvalue lam, eigenvectors V) of Theta: residual factors r and probe "
                       "factors g with f_t - y = V diag(r) V^T (f_0 - y) and "
                       "f_t(x) = f_0(x) - Theta(x, X) V diag(g) V^T (f_0 - y)",
                       "the same for every activation: it enters through Theta only",
                       f"mode variable {lam}; tau = eta t for gradient flow"))


def _statements(arch: Architecture) -> Derivation:
    statements = all_statements(arch.activation)
    equations = tuple(eq for st in statements for eq in st.equations)
    notes = tuple(f"[{st.name}] {st.claim}" for st in statements)
    return Derivation("statements", arch, "analytic statements on the training response (as derived in dynsim)",
                      equations, (), (), notes)


def _describe(arch: Architecture) -> str:
    parts = [arch.activation, f"{arch.scaling} scaling", "hidden bias" if arch.hidden_bias else "no hidden bias"]
    if arch.output_bias:
        parts.append("output bias")
    return ", ".join(parts)


def _aging(losses: tuple[str, ...], output: str) -> Derivation:
    """Late-time asymptotics of a saturating output (``aging.aging_law``) for each loss."""
    equations, notes = [], ["gradient flow of one logit z, target 1, constant kernel K, tau = eta t; "
                            "T = K tau + C with C from z(0) = z_0; the same for every hidden activation"]
    for loss in losses:
        law = aging_law(loss, output)
        equations += law.equations()
        parts = ", ".join(f"{q.name} ~ tau^({q.exponent})" for q in law.quantities)
        notes.append(f"[{loss} loss, {output} output] F(u) ~ ({law.c}) u^{law.m}, u = e^z: {parts}; "
                     "each line below is leading * (1 + first correction)")
    return Derivation("aging", None, "saturation-driven aging: leading exponents and first corrections",
                      tuple(equations), (), (), tuple(notes))


def _selection_mle() -> Derivation:
    """The maximum-likelihood reading of the max-norm chain's selection (``chain.selection_likelihood``)."""
    mle = selection_likelihood()
    if mle.entropy_difference != 0:  # the identity below is printed as proved; refuse otherwise
        raise ArithmeticError(f"-log2 L(theta*)/n - H2(k/n) simplified to {mle.entropy_difference}, not 0")
    q = sympy.Eq(mle.q, mle.k / mle.n)
    return Derivation("selection_mle", None,
                      "max-norm chain (wormhole paper): maximum likelihood of keeping k of n candidate rows",
                      mle.equations(), (q,), (),
                      ("each of n candidate rows is kept with probability theta, k are kept (the k largest |y_i| "
                       "or most negative y_i of y = R x)",
                       "the score vanishes at theta* = k/n (SymPy solve), where the second derivative "
                       f"{sympy.sstr(mle.second_derivative)} < 0 for 0 < k < n: a maximum",
                       "per row, -log2 L(theta*) / n equals the binary entropy H2(k/n) (SymPy simplify of the "
                       "difference: 0)",
                       "the chain's gain and collapse factor are numbers: dynsim.theory.chain."
                       "expected_squared_gain, collapse_factor"))


def _response_law() -> Derivation:
    """The response-law model's analytic solutions (``response_law.solutions``)."""
    law = response_law_solutions()
    return Derivation("response_law", None, "response-law model: one and two samples under a power-law amplitude",
                      law.equations(), (), (), law.notes())


_BUILDERS = {"gradients": _gradients, "ntk": _ntk, "response": _response, "kernel_init": _kernel_init,
             "lazy": _lazy, "statements": _statements, "aging": _aging, "selection_mle": _selection_mle,
             "response_law": _response_law}
if tuple(_BUILDERS) != QUANTITIES:
    raise ImportError("dynsim.theory.QUANTITIES and the derivations in derivations.py differ")


def derive(quantity: str, activation: str | None = None, scaling: str = "ntk", hidden_bias: bool = True,
           output_bias: bool = False, *, loss: str | None = None, output: str = "sigmoid") -> Derivation:
    """The derivation of ``quantity`` for the simple network with these options.

    ``aging`` depends on the loss and the output nonlinearity only (``loss`` None: both losses);
    ``selection_mle`` on nothing; every other quantity needs the hidden ``activation``.
    """
    if quantity not in _BUILDERS:
        raise ValueError(f"unknown quantity {quantity!r}; allowed: {', '.join(QUANTITIES)}")
    if quantity == "aging":
        return _aging((loss,) if loss else AGING_LOSSES, output)
    if quantity == "selection_mle":
        return _selection_mle()
    if quantity == "response_law":
        return _response_law()
    if activation is None:
        raise ValueError(f"quantity {quantity!r} needs an activation: one of {', '.join(sym.ACTIVATION_EXPRESSIONS)}")
    return _BUILDERS[quantity](Architecture(activation, scaling, hidden_bias, output_bias))
