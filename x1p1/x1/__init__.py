"""Sans-I/O X1 (X1 Companion Standard 6.0.0): the OBIS registry, profiles, the API's
models and error codes shared by gateway and converter, and the pairing state machine."""
