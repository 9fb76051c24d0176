// The comparison page: one user's host ranking beside each plugin model's stored ranking.
// Data comes from api/compare (same origin); every text is set with textContent, since reasons
// and profiles are model output.
'use strict';

(function () {
  const form = document.getElementById('user-form');
  const userInput = document.getElementById('user-id');
  const sizeInput = document.getElementById('list-size');
  const statusLine = document.getElementById('status');
  const profileBox = document.getElementById('profile');
  const profileText = document.getElementById('profile-text');
  const columns = document.getElementById('columns');
  const columnTemplate = document.getElementById('column-template');
  const cardTemplate = document.getElementById('card-template');

  function showStatus(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle('error', Boolean(isError));
  }

  function age(createdAt) {
    const seconds = Math.max(0, (Date.now() - createdAt) / 1000);
    if (seconds < 90) return Math.round(seconds) + ' s ago';
    if (seconds < 90 * 60) return Math.round(seconds / 60) + ' min ago';
    if (seconds < 36 * 3600) return Math.round(seconds / 3600) + ' h ago';
    return Math.round(seconds / 86400) + ' days ago';
  }

  function card(movieId, movie, score, reason) {
    const node = cardTemplate.content.firstElementChild.cloneNode(true);
    node.dataset.movieId = String(movieId);
    const title = node.querySelector('.title');
    const posterLink = node.querySelector('.poster-link');
    const poster = node.querySelector('.poster');
    if (movie) {
      title.textContent = movie.title;
      title.href = posterLink.href = '/movie.html?movieId=' + movieId;
      poster.src = '/posters/' + movieId + '.jpg';
      poster.alt = movie.title;
      node.querySelector('.year').textContent = movie.releaseYear;
      node.querySelector('.rating').textContent =
        '★ ' + Number(movie.averageRating).toPrecision(2) + ' (' + movie.ratingNumber + ')';
      node.querySelector('.genres').textContent = (movie.genres || []).join(', ');
    } else {
      node.classList.add('missing');
      title.textContent = 'movie ' + movieId + ' (not loaded by the host)';
      node.querySelector('.facts').hidden = true;
      poster.hidden = true;
    }
    if (score !== undefined) {
      node.querySelector('.score-line').hidden = false;
      node.querySelector('.score').textContent = Number(score).toFixed(3);
    }
    if (reason) {
      const reasonLine = node.querySelector('.reason');
      reasonLine.hidden = false;
      reasonLine.textContent = reason;
    }
    return node;
  }

  function column(model, title, meta) {
    const node = columnTemplate.content.firstElementChild.cloneNode(true);
    node.dataset.model = model;
    node.querySelector('.column-title').textContent = title;
    node.querySelector('.column-meta').textContent = meta;
    return node;
  }

  function hostColumn(host) {
    const node = column(host.model, 'host · ' + host.model, 'SparrowRecsys ranking, model=' + host.model);
    node.classList.add('host');
    node.dataset.source = 'host';
    const cards = node.querySelector('.cards');
    host.movies.forEach(function (movie) { cards.appendChild(card(movie.movieId, movie)); });
    return node;
  }

  function modelColumn(record) {
    if (record.error) {
      const broken = column(record.model, record.model, 'unreadable record');
      broken.dataset.source = 'plugin';
      const error = broken.querySelector('.column-error');
      error.hidden = false;
      error.textContent = record.error;
      return broken;
    }
    const meta = record.backend + ' · ' + record.version + ' · ' + age(record.createdAt)
      + (record.stale ? ' · stale, not served' : '');
    const node = column(record.model, record.model, meta);
    node.dataset.source = 'plugin';
    node.dataset.backend = record.backend;
    node.classList.toggle('stale', record.stale);
    const cards = node.querySelector('.cards');
    record.items.forEach(function (item) {
      cards.appendChild(card(item.movieId, item.movie, item.score, item.reason));
    });
    return node;
  }

  function showProfile(profile) {
    if (profile === null || profile === undefined) {
      profileBox.hidden = true;
      return;
    }
    let text;
    if (typeof profile === 'string') text = profile;
    else if (typeof profile.text === 'string') text = profile.text;
    else if (typeof profile.summary === 'string') text = profile.summary;
    else text = JSON.stringify(profile, null, 2);
    profileText.textContent = text;
    profileBox.hidden = false;
  }

  function render(data) {
    columns.replaceChildren(hostColumn(data.host));
    data.models.forEach(function (record) { columns.appendChild(modelColumn(record)); });
    showProfile(data.profile);
    showStatus('User ' + data.userId + ': the host ranking and ' + data.models.length + ' plugin model'
      + (data.models.length === 1 ? '' : 's') + ' with a record.');
  }

  function load(userId, size) {
    showStatus('Loading user ' + userId + '…');
    fetch('api/compare?id=' + encodeURIComponent(userId) + '&size=' + encodeURIComponent(size))
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.error || ('HTTP ' + response.status));
          return body;
        });
      })
      .then(render)
      .catch(function (error) {
        columns.replaceChildren();
        profileBox.hidden = true;
        showStatus(error.message, true);
      });
  }

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    const params = new URLSearchParams({ id: userInput.value, size: sizeInput.value });
    history.replaceState(null, '', '?' + params.toString());
    load(userInput.value, sizeInput.value);
  });

  const query = new URLSearchParams(location.search);
  if (query.get('size')) sizeInput.value = query.get('size');
  if (query.get('id')) {
    userInput.value = query.get('id');
    load(query.get('id'), sizeInput.value);
  }
}());
