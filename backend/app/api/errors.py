from fastapi import Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


async def request_validation_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """A 422 that says what is wrong and where, without echoing the submitted values.

    FastAPI's default handler copies each offending `input` into the response: that would send a
    rejected password back in clear, and a value that is not valid Unicode cannot even be encoded
    (a 500 instead of a 422).
    """
    assert isinstance(exc, RequestValidationError)
    errors = [{"type": error["type"], "loc": error["loc"], "msg": error["msg"]} for error in exc.errors()]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content=jsonable_encoder({"detail": errors}),
    )
