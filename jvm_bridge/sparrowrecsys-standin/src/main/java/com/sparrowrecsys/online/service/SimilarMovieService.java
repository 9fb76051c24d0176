package com.sparrowrecsys.online.service;

import com.sparrowrecsys.online.recprocess.SimilarMovieProcess;

import javax.servlet.http.HttpServlet;
import javax.servlet.http.HttpServletRequest;
import javax.servlet.http.HttpServletResponse;
import java.io.IOException;

/** TEST STAND-IN of the host's /getsimilarmovie: movies similar to {@code movieId}, ranked by {@code model}. */
public class SimilarMovieService extends HttpServlet {
    @Override
    protected void doGet(HttpServletRequest request, HttpServletResponse response) throws IOException {
        HostJson.answer(response, () -> SimilarMovieProcess.getRecList(Integer.parseInt(request.getParameter("movieId")),
                Integer.parseInt(request.getParameter("size")), request.getParameter("model")));
    }
}
