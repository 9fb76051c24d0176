package com.sparrowrecsys.online.datamanager;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.JsonSerializer;
import com.fasterxml.jackson.databind.SerializerProvider;

import java.io.IOException;
import java.util.List;

/** TEST STAND-IN: writes a rating list the host's way, {@code [{"rating": {...}}, ...]}. */
class RatingListSerializer extends JsonSerializer<List<Rating>> {
    @Override
    public void serialize(List<Rating> ratings, JsonGenerator gen, SerializerProvider provider) throws IOException {
        gen.writeStartArray();
        for (Rating rating : ratings) {
            gen.writeStartObject();
            gen.writeObjectField("rating", rating);
            gen.writeEndObject();
        }
        gen.writeEndArray();
    }
}
