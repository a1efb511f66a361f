from service.errors import Conflict, NotFound


class StoreNotFound(NotFound):
    code, title = "store_not_found", "Store not found"


class StoreExists(Conflict):
    code, title = "store_exists", "Store already exists"


class ProgramVersionConflict(Conflict):
    code, title = "version_conflict", "The program was changed by someone else"


class CurrencyInUse(Conflict):
    code, title = "currency_in_use", "Stored value is held in the current currency"
