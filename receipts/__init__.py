"""Keys, Merkle-batched signatures, hash-chained receipts, payload and material
encryption, evidence bundles and their offline verifier."""

from receipts.bundle import BUNDLE_FORMAT, BundleReport, build_bundle, verify_bundle
from receipts.envelopes import Letter, Opened, Postmaster, Sealed
from receipts.errors import BundleError, KeyFileError, ReceiptsError
from receipts.keys import NodeKeys, key_id
from receipts.materials import decrypt_chunks, encrypt_chunks, new_material_key
from receipts.registry import KeyRecord, KeyRegistry
from receipts.signing import BatchSigner, SignatureChecker

__all__ = [
    "BUNDLE_FORMAT",
    "BatchSigner",
    "BundleError",
    "BundleReport",
    "KeyFileError",
    "KeyRecord",
    "KeyRegistry",
    "Letter",
    "NodeKeys",
    "Opened",
    "Postmaster",
    "ReceiptsError",
    "Sealed",
    "SignatureChecker",
    "build_bundle",
    "decrypt_chunks",
    "encrypt_chunks",
    "key_id",
    "new_material_key",
    "verify_bundle",
]
