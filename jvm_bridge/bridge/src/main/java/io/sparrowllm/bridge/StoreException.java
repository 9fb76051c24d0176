package io.sparrowllm.bridge;

/**
 * The store could not be read (unreachable, unreadable, hostile or corrupt): callers fall back to
 * the host. The message is for the server's log (one line, never the record's content); what an
 * HTTP client may see is only {@link #publicMessage()}, a fixed text per {@link Reason}.
 */
final class StoreException extends Exception {
    /** Why a read failed, with the fixed text a client may see. */
    enum Reason {
        UNREACHABLE("store unreachable"),
        UNREADABLE("record unreadable"),
        NOT_REGULAR("record is not a regular file"),
        TOO_LARGE("record too large"),
        TOO_DEEP("record nested too deeply"),
        INVALID("record invalid"),
        FROM_THE_FUTURE("record createdAt is in the future");

        final String text;

        Reason(String text) {
            this.text = text;
        }
    }

    private final Reason reason;

    StoreException(Reason reason, String detail) {
        super(detail, null, false, false);
        this.reason = reason;
    }

    Reason reason() {
        return reason;
    }

    /** A fixed text: no path, no content. */
    String publicMessage() {
        return reason.text;
    }
}
