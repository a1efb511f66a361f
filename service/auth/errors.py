from service.errors import Forbidden, Unauthorized, Unprocessable


class MissingApiKey(Unauthorized):
    code, title = "unauthorized", "API key required"


class InvalidApiKey(Unauthorized):
    code, title = "unauthorized", "Invalid API key"


class RoleNotAllowed(Forbidden):
    code, title = "forbidden", "This API key may not do that"


class StoreNotAllowed(Forbidden):
    code, title = "forbidden", "This API key serves another store"


class PosKeyNeedsStore(Unprocessable):
    code, title = "store_required", "A pos key must be bound to a store"


class KeyRoleTakesNoStore(Unprocessable):
    code, title = "store_not_allowed", "Only a pos key is bound to a store"
