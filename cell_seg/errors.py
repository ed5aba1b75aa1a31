"""Errors that reach the user as one line: what is wrong, in which file, row and field."""


def first_line(exc):
    """The first line of an exception's message (its type name when the message is empty).

    Used where an error from another library is wrapped into a one-line `CellSegError`.

    Example:
        >>> first_line(ValueError("bad shape\\nlong details")), first_line(KeyError())
        ('bad shape', 'KeyError')
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class CellSegError(Exception):
    """Base class of the errors the command-line tools print as one line (exit code 2)."""


class DataError(CellSegError):
    """Bad or inconsistent input data.

    Args:
        message: what is wrong.
        file: the file it was found in.
        row: the row, record, line or image id.
        field: the column or key.

    Example:
        >>> str(DataError("odd number of values", file="train.csv", row=12, field="annotation"))
        'train.csv, row 12, field annotation: odd number of values'
    """

    def __init__(self, message, file=None, row=None, field=None):
        self.message = message
        self.file = None if file is None else str(file)
        self.row = row
        self.field = field
        super().__init__(self._format())

    def _format(self):
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field {self.field}")
        return (", ".join(where) + ": " + self.message) if where else self.message

    def located(self, file=None, row=None, field=None):
        """Return a copy with missing location parts filled in (inner codecs do not know the file)."""
        return DataError(
            self.message,
            file=self.file if self.file is not None else file,
            row=self.row if self.row is not None else row,
            field=self.field if self.field is not None else field,
        )


class ConfigError(CellSegError):
    """A bad configuration key or value; the message names the key."""


class ModelError(CellSegError):
    """A model that cannot be built, loaded or used as asked."""
