"""IRMSIA: private, tamper-evident medical imaging platform."""

__version__ = "0.1.0"
