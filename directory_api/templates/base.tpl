<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{{title}} · directory-api ops</title>
<link rel="stylesheet" href="{{base}}console.css">
</head>
<body>
<header>
<nav aria-label="Sections">
<a class="brand" href="{{base}}">directory-api ops</a>
<a href="{{base}}"{{!' aria-current="page"' if section == 'overview' else ''}}>Overview</a>
<a href="{{base}}enrolments"{{!' aria-current="page"' if section == 'enrolments' else ''}}>Enrolments</a>
<a href="{{base}}rejections"{{!' aria-current="page"' if section == 'rejections' else ''}}>Rejections</a>
<a href="{{base}}audit"{{!' aria-current="page"' if section == 'audit' else ''}}>Audit</a>
</nav>
</header>
<main>
<h1>{{title}}</h1>
{{!body}}
</main>
</body>
</html>
