"""Saturation-driven aging (dynsim.theory.aging) against the exact flow, solved numerically."""
import numpy as np
import pytest
import sympy
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from dynsim.theory.aging import aging_law, numeric_functions

# The exponents of ../shared/papers/nakazato.md: error and o' ~ tau^-1/2, output kernel ~ tau^-1
# under squared error; -1, -1, -2 under cross-entropy. |dl/dz| (the logit's response amplitude)
# is error x o' for squared error and the error itself for cross-entropy.
EXPONENTS = {
    "squared": dict(error=sympy.Rational(-1, 2), output_derivative=sympy.Rational(-1, 2), output_kernel=-1,
                    loss_derivative=-1),
    "cross_entropy": dict(error=-1, output_derivative=-1, output_kernel=-2, loss_derivative=-1),
}


@pytest.mark.parametrize("loss", list(EXPONENTS))
def test_leading_exponents_are_the_known_ones(loss):
    law = aging_law(loss, "sigmoid")
    assert law.exponents == EXPONENTS[loss]


@pytest.mark.parametrize("loss", list(EXPONENTS))
def test_exact_integral_of_the_flow_matches_the_ode(loss):
    g, F, *_ = numeric_functions(aging_law(loss, "sigmoid"))
    z0, kernel = -0.5, 1.7
    sol = solve_ivp(lambda t, y: [g(y[0], kernel)], (0.0, 300.0), [z0], rtol=1e-12, atol=1e-12, dense_output=True)
    for t in (1.0, 30.0, 300.0):
        # F(e^z(tau)) - F(e^z0) = K tau, to the ODE solver's accuracy (F ~ e^(2z) ~ 1e3 here)
        assert F(np.exp(sol.sol(t)[0])) - F(np.exp(z0)) == pytest.approx(kernel * t, rel=1e-9)


@pytest.mark.parametrize("loss,slope_leading,slope_corrected", [("squared", -0.45, -0.85),
                                                                ("cross_entropy", -0.85, -1.7)])
def test_first_correction_improves_the_expansion_by_one_order(loss, slope_leading, slope_corrected):
    """Against the exact solution u(T) of F(u) = T (root-found), T = K tau + C from 1e3 to 1e6.

    Leading-order relative error falls like T^(-1/2) (squared) or log T / T (cross-entropy); with
    the first correction it falls like log T / T or (log T / T)^2: measured slopes -0.51 -> -0.89
    and -0.88 -> -1.76 in log-log; the bounds leave 0.05 of room.
    """
    law = aging_law(loss, "sigmoid")
    g, F, exact, leading, expanded = numeric_functions(law)
    kernel = 1.0
    Ts = np.array([1e3, 1e4, 1e5, 1e6])
    us = np.array([brentq(lambda v: F(v) - t, 1e-3, 10 * t + 10, xtol=1e-14, rtol=1e-15) for t in Ts])
    for name in exact:
        q = exact[name](us, kernel)
        err_leading = np.abs(leading[name](Ts, kernel) / q - 1)
        err_corrected = np.abs(expanded[name](Ts, kernel) / q - 1)
        assert np.all(err_corrected < err_leading / 5), name
        assert np.polyfit(np.log(Ts), np.log(err_leading), 1)[0] < slope_leading + 0.05
        assert np.polyfit(np.log(Ts), np.log(err_leading), 1)[0] > slope_leading - 0.2
        assert np.polyfit(np.log(Ts), np.log(err_corrected), 1)[0] < slope_corrected, name
        # the exact quantity's log-log slope over three decades is the exponent (corrections < 0.015)
        slope = np.polyfit(np.log(Ts), np.log(q), 1)[0]
        assert slope == pytest.approx(float(law.exponents[name]), abs=0.015), name


def test_cross_entropy_on_the_logit_output_ages_only_through_the_error():
    law = aging_law("cross_entropy", "identity")
    assert law.exponents == dict(error=-1, output_derivative=0, output_kernel=0, loss_derivative=-1)


def test_squared_error_on_a_linear_output_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="does not saturate"):
        aging_law("squared", "identity")


def test_derive_cli_prints_the_exponents(capsys):
    import argparse

    from dynsim.theory.cli import register, run_derive

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert run_derive(parser.parse_args(["derive", "--quantity", "aging", "--sympy"])) == 0
    out = capsys.readouterr().out
    assert "error ~ tau^(-1/2)" in out and "output_kernel ~ tau^(-2)" in out
    assert "Eq(z(tau) + exp(z(tau)), C + K*tau)" in out  # cross-entropy's exact integral
    assert run_derive(parser.parse_args(["derive", "--quantity", "ntk"])) == 2  # needs --activation
