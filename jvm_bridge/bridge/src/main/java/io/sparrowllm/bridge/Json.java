package io.sparrowllm.bridge;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.io.IOContext;
import com.fasterxml.jackson.core.util.JsonGeneratorDelegate;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.io.Writer;

/**
 * The Jackson mappers. {@link #MAPPER} is left at its defaults so that it writes host objects exactly as
 * the host does. {@link #ANSWERS} writes our own answers (the gateway's and the comparison page's): JSON
 * has no NaN or Infinity, so a number that is not finite (a literal NaN rating in the host's data makes
 * a movie's average NaN) is written as null. The host's Jackson (2.6) has no feature for that (its
 * QUOTE_NON_NUMERIC_NUMBERS writes the string "NaN", and a tree's toString() a bare NaN), so its
 * generators are wrapped in Jackson's own JsonGeneratorDelegate.
 */
final class Json {
    static final ObjectMapper MAPPER = new ObjectMapper();
    static final ObjectMapper ANSWERS = new ObjectMapper(new FiniteNumbersFactory());

    private Json() {
    }

    /** The text of one of our answers: never a non-finite number. */
    static String answer(JsonNode node) {
        try {
            return ANSWERS.writeValueAsString(node);
        } catch (JsonProcessingException e) {
            throw new UncheckedIOException(e); // a tree written to a string does not fail
        }
    }

    /** A factory whose generators write null for NaN and the infinities. */
    private static final class FiniteNumbersFactory extends JsonFactory {
        private static final long serialVersionUID = 1L;

        @Override
        protected JsonGenerator _createGenerator(Writer out, IOContext context) throws IOException {
            return new FiniteNumbers(super._createGenerator(out, context));
        }

        @Override
        protected JsonGenerator _createUTF8Generator(OutputStream out, IOContext context) throws IOException {
            return new FiniteNumbers(super._createUTF8Generator(out, context));
        }

        @Override
        public JsonFactory copy() {
            return new FiniteNumbersFactory();
        }
    }

    private static final class FiniteNumbers extends JsonGeneratorDelegate {
        FiniteNumbers(JsonGenerator generator) {
            super(generator, false);
        }

        @Override
        public void writeNumber(double value) throws IOException {
            if (Double.isFinite(value)) {
                super.writeNumber(value);
            } else {
                writeNull();
            }
        }

        @Override
        public void writeNumber(float value) throws IOException {
            if (Float.isFinite(value)) {
                super.writeNumber(value);
            } else {
                writeNull();
            }
        }
    }
}
