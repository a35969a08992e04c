from app.core.config import HASH_POOL_SIZE, HASH_QUEUE_SIZE, HASH_WAIT_SECONDS
from app.services.authentication import AuthService
from app.services.hashing import HashingPool

auth_service = AuthService()
hashing_pool = HashingPool(size=HASH_POOL_SIZE, queue_size=HASH_QUEUE_SIZE, wait_seconds=HASH_WAIT_SECONDS)
