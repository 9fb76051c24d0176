package com.sparrowrecsys.online.service;

import com.fasterxml.jackson.databind.ObjectMapper;

import javax.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.util.concurrent.Callable;

/**
 * TEST STAND-IN of how every host service answers: plain Jackson JSON of the answer (an empty
 * line when it is null), status 200; on any exception the stack trace and an empty 200.
 */
final class HostJson {
    private HostJson() {
    }

    static void answer(HttpServletResponse response, Callable<Object> answer) throws IOException {
        response.setContentType("application/json");
        response.setStatus(HttpServletResponse.SC_OK);
        response.setCharacterEncoding("UTF-8");
        response.setHeader("Access-Control-Allow-Origin", "*");
        try {
            Object value = answer.call();
            response.getWriter().println(value == null ? "" : new ObjectMapper().writeValueAsString(value));
        } catch (Exception e) {
            e.printStackTrace();
            response.getWriter().println("");
        }
    }
}
