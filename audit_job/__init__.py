"""audit-job: audit Authing login sessions for user/app pairs into SQL tables."""

__version__ = "0.1.0"
