package com.sparrowrecsys.online.service;

import com.sparrowrecsys.online.recprocess.RecForYouProcess;

import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import java.io.IOException;

/** TEST STAND-IN of the host's /getrecforyou: the user's recommendations, ranked by {@code model} (the A/B switch is not implemented). */
public class RecForYouService extends HttpServlet {
    @Override
    protected void doGet(HttpServletRequest request, HttpServletResponse response) throws IOException {
        HostJson.answer(response, () -> RecForYouProcess.getRecList(Integer.parseInt(request.getParameter("id")),
                Integer.parseInt(request.getParameter("size")), request.getParameter("model")));
    }
}
