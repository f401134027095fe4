"""x1p1: DSMR6 X1 to P1 converter, with an embedded DSMR6 gateway.

The converter (:mod:`x1p1.converter`) turns a DSMR6 meter's X1 interface (X1 Companion
Standard 6.0.0) back into a DSMR 5.0.2 P1 serial line. The embedded gateway
(:mod:`x1p1.gateway`) is a complete simulated DSMR6 gateway to run and test against.
"""

__version__ = "0.1.0"
