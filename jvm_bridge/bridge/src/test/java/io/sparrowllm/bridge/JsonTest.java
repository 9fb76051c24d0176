package io.sparrowllm.bridge;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.Test;

import java.io.StringWriter;

import static org.junit.Assert.assertEquals;

/**
 * NaN is not fatal (issue 18, case 3): the gateway's and the comparison page's answers never hold a
 * number JSON does not have. A literal NaN rating makes a movie's average NaN; written as null.
 */
public class JsonTest {
    @Test
    public void aNonFiniteNumberInATreeIsWrittenAsNull() {
        ObjectNode node = Json.MAPPER.createObjectNode();
        node.put("nan", Double.NaN).put("inf", Double.POSITIVE_INFINITY).put("ninf", Float.NEGATIVE_INFINITY)
                .put("fnan", Float.NaN).put("ok", 3.5).put("f", 2.5f);
        ArrayNode row = node.putArray("row").add(1).add(Double.NaN).add("t");
        row.addArray().add(Float.NaN).add(0.25f);
        assertEquals("a tree's own toString writes the bare NaN the page could not parse",
                true, node.toString().contains("NaN"));
        assertEquals("{\"nan\":null,\"inf\":null,\"ninf\":null,\"fnan\":null,\"ok\":3.5,\"f\":2.5,"
                + "\"row\":[1,null,\"t\",[null,0.25]]}", Json.answer(node));
    }

    @Test
    public void aStreamedNonFiniteNumberIsWrittenAsNull() throws Exception {
        StringWriter out = new StringWriter();
        try (JsonGenerator json = Json.ANSWERS.getFactory().createGenerator(out)) {
            json.writeStartArray();
            json.writeNumber(1);
            json.writeNumber(Float.NaN);
            json.writeNumber(Double.NEGATIVE_INFINITY);
            json.writeNumber(4.5f);
            json.writeEndArray();
        }
        assertEquals("[1,null,null,4.5]", out.toString());
    }

    @Test
    public void theHostsMapperIsLeftAsTheHostHasIt() throws Exception {
        // The stage writes the host's movies byte for byte as the host does: its mapper keeps Jackson's default.
        assertEquals("[\"NaN\"]", Json.MAPPER.writeValueAsString(new double[]{Double.NaN}));
    }
}
