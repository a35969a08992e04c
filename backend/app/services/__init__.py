from app.core.config import HASH_MAX_WAIT_SECONDS, HASH_POOL_SIZE
from app.services.authentication import AuthService
from app.services.hashing import HashingPool

auth_service = AuthService()
hashing_pool = HashingPool(size=HASH_POOL_SIZE, max_wait_seconds=HASH_MAX_WAIT_SECONDS)
