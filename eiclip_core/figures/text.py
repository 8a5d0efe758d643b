"""Catalog text in figures: a product's name, description or entity value is drawn as it is written.

matplotlib reads a string holding two unescaped "$" as mathtext: "Was $25 - our #1 - now $19" would be
drawn as a formula between the dollars, or fail on a character mathtext does not know ("#"). The kit's
own labels hold no "$"; every string that comes from a catalog goes through `literal` before it is drawn.
"""


def literal(text) -> str:
    """`text` with every "$" escaped: matplotlib draws an escaped dollar as "$" and never starts mathtext
    at it. Applied last, to the string as drawn (after wrapping or shortening, which could otherwise cut
    an escape in two)."""
    return str(text).replace("$", r"\$")
