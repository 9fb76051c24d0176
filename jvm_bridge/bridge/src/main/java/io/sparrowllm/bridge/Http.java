package io.sparrowllm.bridge;

import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import java.io.IOException;

/** What our servlets share with the host's: how parameters are read and how JSON answers are framed. */
final class Http {
    private Http() {
    }

    /** The parameter as the host reads it (Integer.parseInt), or null when it is missing or not an integer. */
    static Integer intParameter(HttpServletRequest request, String name) {
        String value = request.getParameter(name);
        try {
            return value == null ? null : Integer.valueOf(value);
        } catch (NumberFormatException e) {
            return null;
        }
    }

    /** Answers with the host's headers (JSON, UTF-8, open CORS) and body framing (one printed line). */
    static void sendJson(HttpServletResponse response, int status, String body) throws IOException {
        response.setContentType("application/json");
        response.setStatus(status);
        response.setCharacterEncoding("UTF-8");
        response.setHeader("Access-Control-Allow-Origin", "*");
        response.getWriter().println(body);
    }
}
