package com.sparrowrecsys.online.service;

import com.sparrowrecsys.online.datamanager.DataManager;

import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import java.io.IOException;

/** TEST STAND-IN of the host's /getrecommendation: the movies of a {@code genre}, cut to {@code size}, sorted by {@code sortby}. */
public class RecommendationService extends HttpServlet {
    @Override
    protected void doGet(HttpServletRequest request, HttpServletResponse response) throws IOException {
        HostJson.answer(response, () -> DataManager.getInstance().getMoviesByGenre(request.getParameter("genre"),
                Integer.parseInt(request.getParameter("size")), request.getParameter("sortby")));
    }
}
