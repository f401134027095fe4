"""The embedded DSMR6 gateway: meter simulation, X1 API server, portal, mDNS, PKI.

Needs the `gateway` extra (aiohttp, cryptography); the converter never imports it.
"""
