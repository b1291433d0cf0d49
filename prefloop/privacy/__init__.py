"""Privacy: pseudonymous user ids on the wire, and forgetting a user (`prefloop forget`)."""

from prefloop.privacy.ledger import ForgottenLedger
from prefloop.privacy.pseudonym import Pseudonymiser, pseudonym
from prefloop.privacy.settings import PrivacySettings

__all__ = ["ForgottenLedger", "PrivacySettings", "Pseudonymiser", "pseudonym"]
