"""Evidence an auditor can check offline: the canonical form of a run, its digest, the
hash chain over all runs, reproducible bundles, signatures and their verification.

The modules here are pure (no database): `canonical` (the byte-exact form and digest),
`config` (the configuration without secrets), `archive` (reproducible tar.gz / zip),
`manifest` (file list, SHA256SUMS), `keys` (Ed25519), `readme` (the auditor's README.txt),
`verify` (a bundle, offline). The database side is `store/evidence.py` and
`store/evidence_rows.py`; the services are `commands/evidence.py`.
"""
