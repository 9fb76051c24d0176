package io.sparrowllm.bridge;

import com.fasterxml.jackson.databind.ObjectMapper;

/** The one Jackson mapper, left at its defaults so that it writes host objects exactly as the host does. */
final class Json {
    static final ObjectMapper MAPPER = new ObjectMapper();

    private Json() {
    }
}
