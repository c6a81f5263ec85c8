"""``dynsim derive``: print a derivation as LaTeX, SymPy text or the generated Python code.

``register(subparsers)`` adds the subcommand to dynsim's argparse parser; ``run_derive(args)`` runs
it. SymPy is imported only when the command runs, so that other commands stay fast.
"""
import sys

from ..models.activations import ACTIVATIONS
from . import ACTIVATION_FREE_QUANTITIES, QUANTITIES

# the choices of the aging derivation (kept here so that the parser needs no SymPy)
AGING_LOSSES = ("squared", "cross_entropy")
AGING_OUTPUTS = ("sigmoid", "identity")


def register(subparsers):
    """Add ``derive`` to an ``argparse`` subparsers object; returns the new parser."""
    p = subparsers.add_parser("derive", help="print the analytic NTK, response, kernels or lazy solution "
                                             "of the simple network (SymPy)")
    p.add_argument("--activation", choices=tuple(ACTIVATIONS),
                   help="hidden activation (needed by every quantity but aging, selection_mle and "
                        "response_law)")
    p.add_argument("--quantity", required=True, choices=QUANTITIES,
                   help="gradients | ntk | response (to eta^2) | kernel_init (expectation at "
                        "initialisation) | lazy (linearised GD) | statements | aging (late-time exponents "
                        "and first corrections of a saturating output) | selection_mle (max-norm chain of the "
                        "wormhole paper: the selection's MLE k/n and per-row -log2 L = H2(k/n)) | response_law "
                        "(the response-law model's solutions: one sample per loss, two samples' boundary)")
    p.add_argument("--loss", choices=AGING_LOSSES, default=None, help="aging: one loss (default: both)")
    p.add_argument("--output", choices=AGING_OUTPUTS, default="sigmoid", help="aging: output nonlinearity "
                                                                              "(default sigmoid)")
    p.add_argument("--scaling", choices=("ntk", "standard"), default="ntk", help="output scaling (default ntk)")
    p.add_argument("--no-hidden-bias", dest="hidden_bias", action="store_false", help="no trained hidden biases b_i")
    p.add_argument("--output-bias", action="store_true", help="a trained output bias c")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--latex", dest="format", action="store_const", const="latex", help="LaTeX (default)")
    fmt.add_argument("--sympy", dest="format", action="store_const", const="sympy",
                     help="SymPy expressions (str form)")
    fmt.add_argument("--python", dest="format", action="store_const", const="python",
                     help="the generated, Numba-compiled Python code")
    p.set_defaults(format="latex", handler=run_derive)
    return p


def run_derive(args) -> int:
    from .derivations import derive

    if args.quantity not in ACTIVATION_FREE_QUANTITIES and args.activation is None:
        sys.stderr.write(f"dynsim derive: error: --quantity {args.quantity} needs --activation "
                         f"({', '.join(ACTIVATIONS)})\n")
        return 2
    try:
        derivation = derive(args.quantity, args.activation, scaling=args.scaling, hidden_bias=args.hidden_bias,
                            output_bias=args.output_bias, loss=args.loss, output=args.output)
    except ValueError as exc:  # e.g. squared error on the identity output: nothing saturates
        sys.stderr.write(f"dynsim derive: error: {exc}\n")
        return 2
    text = {"latex": derivation.latex, "sympy": derivation.sympy_text, "python": derivation.python}[args.format]()
    sys.stdout.write(text + "\n")
    return 0
